import Foundation
import HostControl

/// A built `inetinfo` started as a child process on ephemeral ports with a temporary state directory,
/// driven through the built `inetinfoctl`. Tears everything down when stopped.
final class HostProcess: @unchecked Sendable {
    let process = Process()
    let directory: URL
    let socketPath: String
    let logPath: String

    static var buildDirectory: URL {
        // The test bundle lives in the build products folder, next to the executables.
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if FileManager.default.fileExists(atPath: bundle.appendingPathComponent("inetinfo").path) { return bundle }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug")
    }

    static var inetinfo: String { buildDirectory.appendingPathComponent("inetinfo").path }
    static var inetinfoctl: String { buildDirectory.appendingPathComponent("inetinfoctl").path }

    init(_ arguments: [String] = [], environment: [String: String] = [:], directory: URL? = nil) throws {
        let directory = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.directory = directory
        socketPath = directory.appendingPathComponent("ctl.sock").path
        logPath = directory.appendingPathComponent("host.log").path
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: Self.inetinfo)
        process.arguments = [
            "--state-dir", directory.appendingPathComponent("state").path, "--control-socket", socketPath,
            "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        ] + arguments
        var env = ProcessInfo.processInfo.environment
        for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "JOURNAL_STREAM"] {
            env.removeValue(forKey: key)
        }
        env.merge(environment) { $1 }
        process.environment = env
        let log = FileHandle(forWritingAtPath: logPath)!
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Runs `inetinfoctl --socket <ours> ARGS`.
    @discardableResult
    func ctl(_ arguments: [String], asNobody: Bool = false) throws -> CommandResult {
        try CommandResult.run(Self.inetinfoctl, arguments.prefix(1) + ["--socket", socketPath] + arguments.dropFirst(), asNobody: asNobody)
    }

    func status() throws -> HostStatus {
        let result = try ctl(["status", "--json"])
        return try ControlJSON.decoder().decode(HostStatus.self, from: Data(result.stdout.utf8))
    }

    /// Waits until every enabled service runs (`status` exits 0).
    func waitUntilRunning(timeout: Duration = .seconds(20)) async throws -> HostStatus {
        try await eventually("all services running", timeout: timeout) {
            guard process.isRunning else { throw TestError("host exited (\(process.terminationStatus)); log:\n\(log)") }
            let result = try ctl(["status", "--json"])
            guard result.status == 0 else { return nil }
            return try ControlJSON.decoder().decode(HostStatus.self, from: Data(result.stdout.utf8))
        }
    }

    func port(of service: String, in status: HostStatus) -> Int {
        Int(status.services.first { $0.name == service }!.listen[0].split(separator: ":").last!)!
    }

    /// Waits for the process to end; returns its termination status and reason.
    func waitForExit(timeout: Duration = .seconds(15)) async throws -> (Int32, Process.TerminationReason) {
        try await eventually("host exit", timeout: timeout) {
            process.isRunning ? nil : (process.terminationStatus, process.terminationReason)
        }
    }

    func signal(_ number: Int32) { kill(pid, number) }

    /// Stops the host (SIGKILL if SIGTERM is not enough) and removes its directory.
    func stop() async {
        if process.isRunning {
            signal(SIGTERM)
            if (try? await waitForExit(timeout: .seconds(10))) == nil {
                signal(SIGKILL)
                _ = try? await waitForExit(timeout: .seconds(5))
            }
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String

    static func run(_ executable: String, _ arguments: [String], asNobody: Bool = false) throws -> CommandResult {
        let process = Process()
        if asNobody {
            // Debian's nobody has group nogroup (65534); setpriv --regid=nobody would fail.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CommandResult(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                             stderr: String(decoding: stderr, as: UTF8.self))
    }
}

struct TestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Polls `probe` until it returns a value; fails after `timeout`.
func eventually<T>(_ what: String, timeout: Duration, every interval: Duration = .milliseconds(20),
                   _ probe: () throws -> T?) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    var lastError: (any Error)?
    while ContinuousClock.now < deadline {
        do {
            if let value = try probe() { return value }
        } catch let error as TestError {
            throw error
        } catch {
            lastError = error
        }
        try await Task.sleep(for: interval)
    }
    throw TestError("timed out after \(timeout) waiting for \(what)\(lastError.map { "; last error: \($0)" } ?? "")")
}

/// Minimal blocking TCP helpers for talking to the services.
enum TCP {
    static func connect(port: Int, timeout: Int = 5) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var interval = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            throw TestError("connect to \(port): \(String(cString: strerror(code)))")
        }
        return fd
    }

    static func send(_ fd: Int32, _ text: String) throws {
        let bytes = Array(text.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw TestError("write failed") }
    }

    /// Reads until `terminator` appears (or EOF / timeout).
    static func read(_ fd: Int32, until terminator: String) -> String {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: data, as: UTF8.self).contains(terminator) {
            let count = Glibc.read(fd, &chunk, chunk.count)
            if count <= 0 { break }
            data += chunk[..<count]
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// One HTTP/1.1 GET with `Connection: close`; returns the whole response.
    static func httpGet(port: Int, path: String = "/") throws -> String {
        let fd = try connect(port: port)
        defer { close(fd) }
        try send(fd, "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return read(fd, until: "\u{0}")
    }
}
