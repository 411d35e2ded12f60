import Foundation
import HostControl
import InetinfoHost
import NIOConcurrencyHelpers

/// An inetinfo host for tests: ephemeral ports, a temporary state directory, fault injection enabled,
/// either a child process of the built `inetinfo` binary or a host running inside the test process.
///
/// Everything goes through the host's real control socket, so a test sees what an operator sees.
/// ``stop()`` (or ``kill()``) ends the host and removes its directory: no process, file or port is left.
///
/// ```swift
/// let host = try await TestHost.start(.init(settings: ["supervisor.backoff-max": "50"]))
/// try host.inject(.throw, into: "smtp")
/// try await host.waitForState("smtp", .running, instance: 2)
/// await host.stop()
/// ```
public final class TestHost: @unchecked Sendable {
    public enum Mode: Sendable {
        /// The built binary as a child process (the default; required for `trap` and for SIGKILL).
        /// `binary` defaults to ``TestHost/locateBinary()``.
        case childProcess(binary: String? = nil)
        /// The host inside the test process (faster start; `trap` and `kill()` are refused).
        case inProcess
    }

    public struct Configuration: Sendable {
        public var mode: Mode = .childProcess()
        public var isolation = "isolated"
        public var faultInjection = true
        public var simulateMS02012 = false
        /// The directory the HTTP service serves; the shipped default web site when nil.
        public var webRoot: String?
        /// Any configuration key (`--set KEY=VALUE`), e.g. `["smtp.enabled": "false"]`.
        public var settings: [String: String] = [:]
        /// More arguments for the binary (child process only).
        public var arguments: [String] = []
        /// A command the binary is started through (child process only), e.g.
        /// `["/usr/bin/prlimit", "--nofile=64:64", "--"]` to run the host with few file descriptors.
        public var launcher: [String] = []
        public var environment: [String: String] = [:]
        /// An existing state directory to reuse (crash-consistency tests); a new temporary one when nil.
        public var stateDirectory: URL?
        /// Pass `--smtp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0` (the default). Flags win over the
        /// configuration file and `--set`, so a test of listen addresses from those (several addresses,
        /// IPv6, a reload that changes them) turns this off and sets `smtp.listen` and `http.listen` there.
        public var listenFlags = true

        public init(mode: Mode = .childProcess(), isolation: String = "isolated", simulateMS02012: Bool = false,
                    webRoot: String? = nil, settings: [String: String] = [:]) {
            self.mode = mode
            self.isolation = isolation
            self.simulateMS02012 = simulateMS02012
            self.webRoot = webRoot
            self.settings = settings
        }
    }

    /// Where the host keeps its own files (state, control socket, log).
    public let directory: URL
    public let stateDirectory: URL
    public let controlSocket: String
    public let logPath: String
    public let configuration: Configuration
    private let ownsDirectory: Bool
    var process: Process?
    private var inProcess: (task: Task<InetinfoHost.ExitStatus, Never>, handle: NIOLockedValueBox<InetinfoHost.Handle?>)?

    private init(configuration: Configuration) throws {
        self.configuration = configuration
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-testhost-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        directory = base
        ownsDirectory = true
        stateDirectory = configuration.stateDirectory ?? base.appendingPathComponent("state")
        controlSocket = base.appendingPathComponent("ctl.sock").path
        logPath = base.appendingPathComponent("host.log").path
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    }

    /// Starts a host and waits until every enabled service runs.
    public static func start(_ configuration: Configuration = .init(), timeout: Duration = .seconds(30)) async throws -> TestHost {
        let host = try TestHost(configuration: configuration)
        do {
            try host.launch()
            _ = try await host.waitUntilRunning(timeout: timeout)
        } catch {
            await host.stop()
            throw error
        }
        return host
    }

    /// Starts a host without waiting (for tests of start-up failures).
    public static func launch(_ configuration: Configuration = .init()) throws -> TestHost {
        let host = try TestHost(configuration: configuration)
        try host.launch()
        return host
    }

    var arguments: [String] {
        var arguments = [
            "--state-dir", stateDirectory.path, "--control-socket", controlSocket, "--isolation", configuration.isolation,
        ]
        if configuration.listenFlags { arguments += ["--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"] }
        if configuration.faultInjection { arguments.append("--enable-fault-injection") }
        if configuration.simulateMS02012 { arguments.append("--simulate-ms02-012") }
        if let webRoot = configuration.webRoot { arguments += ["--web-root", webRoot] }
        for (key, value) in configuration.settings.sorted(by: { $0.key < $1.key }) { arguments += ["--set", "\(key)=\(value)"] }
        return arguments + configuration.arguments
    }

    private func launch() throws {
        switch configuration.mode {
        case .childProcess(let binary):
            let process = Process()
            let executable = try binary ?? Self.locateBinary()
            if let launcher = configuration.launcher.first {
                process.executableURL = URL(fileURLWithPath: launcher)
                process.arguments = configuration.launcher.dropFirst() + [executable] + arguments
            } else {
                process.executableURL = URL(fileURLWithPath: executable)
                process.arguments = arguments
            }
            var environment = ProcessInfo.processInfo.environment
            for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM"] {
                environment.removeValue(forKey: key)
            }
            environment.merge(configuration.environment) { $1 }
            process.environment = environment
            guard let log = FileHandle(forWritingAtPath: logPath) else { throw TestHostError("cannot open \(logPath)") }
            process.standardOutput = log
            process.standardError = log
            try process.run()
            self.process = process
        case .inProcess:
            var options = HostOptions()
            var flags: [(key: String, value: String, flag: String)] = []
            var index = 0
            let arguments = self.arguments
            while index < arguments.count {
                let (flag, value) = (arguments[index], index + 1 < arguments.count ? arguments[index + 1] : "")
                switch flag {
                case "--set": options.assignments.append(value); index += 2
                case "--enable-fault-injection": flags.append(("host.fault-injection", "true", flag)); index += 1
                case "--simulate-ms02-012": flags.append(("smtp.simulate-ms02-012", "true", flag)); index += 1
                default:
                    let key = ["--state-dir": "host.state-dir", "--control-socket": "host.control-socket",
                               "--smtp-listen": "smtp.listen", "--http-listen": "http.listen",
                               "--isolation": "host.isolation", "--web-root": "http.web-root"][flag]
                    guard let key else { throw TestHostError("in-process hosts take no argument \(flag)") }
                    flags.append((key, value, flag))
                    index += 2
                }
            }
            options.flags = flags
            let configuration = try InetinfoHost.configuration(options: options)
            // This process is the test runner, not `inetinfo`: workers must come from the built binary.
            if configuration.isolation == .process { options.workerExecutable = try Self.locateBinary() }
            let handle = NIOLockedValueBox<InetinfoHost.Handle?>(nil)
            let task = Task {
                await InetinfoHost.run(options: options, configuration: configuration, handlesSignals: false) { started in
                    handle.withLockedValue { $0 = started }
                }
            }
            inProcess = (task, handle)
        }
    }

    /// The built `inetinfo`: `$INETINFO_BINARY`, else next to the running test bundle, else on PATH.
    public static func locateBinary() throws -> String {
        if let path = ProcessInfo.processInfo.environment["INETINFO_BINARY"], !path.isEmpty { return path }
        let nextToBundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("inetinfo").path
        if FileManager.default.isExecutableFile(atPath: nextToBundle) { return nextToBundle }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let candidate = "\(directory)/inetinfo"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw TestHostError("cannot find the inetinfo binary: build it (swift build) or set INETINFO_BINARY")
    }

    // MARK: - Process

    /// The host's pid (the test process itself for an in-process host).
    public var pid: Int32 { process?.processIdentifier ?? getpid() }
    public var isRunning: Bool {
        if let process { return process.isRunning }
        return inProcess.map { _ in true } ?? false
    }

    /// What the host logged so far (child process only).
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    public func signal(_ number: Int32) {
        guard let process, process.isRunning else { return }
        Foundation.kill(process.processIdentifier, number)
    }

    /// Kills the host with SIGKILL and waits for it (child process only): a crash at a random moment.
    public func kill() async throws {
        guard process != nil else { throw TestHostError("an in-process host cannot be killed") }
        signal(SIGKILL)
        _ = try await waitForExit()
    }

    /// Waits for a child host to end; returns its status and how it ended.
    public func waitForExit(timeout: Duration = .seconds(15)) async throws -> (status: Int32, reason: Process.TerminationReason) {
        guard let process else { throw TestHostError("an in-process host has no exit status") }
        return try await Deadline.eventually("the host to exit", timeout: timeout) {
            process.isRunning ? nil : (process.terminationStatus, process.terminationReason)
        }
    }

    /// Starts the host again on the same state directory after it ended (crash-consistency tests).
    public func relaunch() throws -> TestHost {
        var configuration = self.configuration
        configuration.stateDirectory = stateDirectory
        return try TestHost.launch(configuration)
    }

    /// Starts a host, runs `body` with it, and stops it — awaited — whether `body` returns or throws, so
    /// that a failing test leaves no host running and no files behind. (A `defer { Task { … stop() } }`
    /// is never awaited: the test ends, and its host runs on.)
    public static func with<Result>(_ configuration: Configuration = Configuration(),
                                    _ body: (TestHost) async throws -> Result) async throws -> Result {
        let host = try await start(configuration)
        do {
            let result = try await body(host)
            await host.stop()
            return result
        } catch {
            await host.stop()
            throw error
        }
    }

    /// Stops the host (SIGTERM, then SIGKILL after 10 s) and removes its files; calling it again does nothing.
    public func stop() async {
        if let process, process.isRunning {
            signal(SIGTERM)
            if (try? await waitForExit(timeout: .seconds(10))) == nil {
                signal(SIGKILL)
                _ = try? await waitForExit(timeout: .seconds(5))
            }
        }
        if let inProcess {
            await inProcess.handle.withLockedValue { $0 }?.shutdown()
            _ = await inProcess.task.value
            self.inProcess = nil
        }
        if ownsDirectory { try? FileManager.default.removeItem(at: directory) }
    }

    /// Open file descriptors of the host process (from /proc).
    public var openFileDescriptors: Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }

    /// Resident memory of the host process in bytes (VmRSS from /proc).
    public var residentMemory: Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "")
        else { return 0 }
        return kilobytes * 1024
    }
}

public struct TestHostError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
