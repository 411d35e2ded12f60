import Foundation
import InetinfoTestKit
import Testing

/// Documented start and stop behaviour (docs/supervision.md, docs/operations.md, docs/smtp.md): a port in
/// use ends the start with exit status 1 and `ERRNO=` for systemd; a stale control-socket file is
/// replaced, a live one is not taken over; a graceful stop says `421 4.3.2` to an open SMTP session.
@Suite(.serialized, .timeLimit(.minutes(2))) struct StartupTests {
    /// Runs the built `inetinfo` with `arguments` until it exits (at most 20 s).
    func runHost(_ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try TestHost.locateBinary())
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        if (try? await Deadline.eventually("inetinfo to exit", timeout: .seconds(20)) { process.isRunning ? nil : true }) == nil {
            process.terminate()
            throw TestError("inetinfo \(arguments) did not exit within 20 s")
        }
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (process.terminationStatus, text)
    }

    func scratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-start-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test func aPortInUseEndsTheStartWithStatus1AndErrno() async throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let busy = try TCPListener()
        defer { busy.close() }
        let notify = try NotifyListener()
        defer { notify.close() }
        let (status, stderr) = try await runHost([
            "--state-dir", directory.path + "/state", "--control-socket", directory.path + "/ctl.sock",
            "--smtp-listen", "127.0.0.1:\(busy.port)", "--http-listen", "127.0.0.1:0",
        ], environment: ["NOTIFY_SOCKET": notify.path])
        #expect(status == 1, "\(stderr)")
        #expect(stderr.contains("cannot start"), "\(stderr)")
        let lines = try await Deadline.eventually("ERRNO= and STATUS= for systemd", timeout: .seconds(5)) { () -> [String]? in
            let lines = notify.messages.flatMap(\.lines)
            return lines.contains { $0.hasPrefix("ERRNO=") } ? lines : nil
        }
        #expect(lines.contains { $0.hasPrefix("STATUS=cannot start") }, "\(lines)")
        #expect(!lines.contains("READY=1"))
    }

    @Test func aStaleControlSocketIsReplacedAndALiveOneIsNotTakenOver() async throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let socketPath = directory.path + "/ctl.sock"
        // Left by a host that was killed: a socket file nobody listens on.
        let stale = try UnixListener(path: socketPath)
        stale.closeKeepingFile()
        #expect(FileManager.default.fileExists(atPath: socketPath))
        let first = Process()
        first.executableURL = URL(fileURLWithPath: try TestHost.locateBinary())
        first.arguments = ["--state-dir", directory.path + "/first", "--control-socket", socketPath,
                           "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
        first.standardError = FileHandle.nullDevice
        try first.run()
        defer {
            first.terminate()
            first.waitUntilExit()
        }
        let status = try await Deadline.eventually("the host to answer on the replaced socket", timeout: .seconds(20)) { () -> CommandResult? in
            let result = try CommandResult.run(TestHost.inetinfoctl, ["--socket", socketPath, "status", "--json"])
            return result.status == 0 ? result : nil
        }
        let object = try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any]
        let pid = (object?["host"] as? [String: Any])?["pid"] as? Int
        #expect(pid == Int(first.processIdentifier), "the stale file was replaced and this host answers on it")
        // A second host on the same control socket refuses to start: exit 1, the reason said.
        let (secondStatus, stderr) = try await runHost([
            "--state-dir", directory.path + "/second", "--control-socket", socketPath,
            "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        ])
        #expect(secondStatus == 1)
        #expect(stderr.contains("another inetinfo host is already listening on \(socketPath)"), "\(stderr)")
        #expect(try CommandResult.run(TestHost.inetinfoctl, ["--socket", socketPath, "status"]).status == 0,
                "the first host keeps its socket")
        #expect(first.isRunning)
    }

    /// The control socket replaces only a socket (a file an operator's typo points at is left alone: exit
    /// 1, the reason said); a request line without end is cut off at 1 MiB instead of growing until the
    /// host runs out of memory; past 64 connections at once a client is told so; connections that send
    /// nothing are closed after 10 s, and the host answers again.
    @Test func theControlSocketReplacesOnlyASocketAndBoundsItsClients() async throws {
        let directory = try scratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let notASocket = directory.path + "/notes.txt"
        try Data("keep me\n".utf8).write(to: URL(fileURLWithPath: notASocket))
        let (status, stderr) = try await runHost([
            "--state-dir", directory.path + "/state", "--control-socket", notASocket,
            "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        ])
        #expect(status == 1)
        #expect(stderr.contains("\(notASocket) exists and is not a socket"), "\(stderr)")
        #expect(FileManager.default.contents(atPath: notASocket) == Data("keep me\n".utf8))

        try await withHost(["--set", "http.enabled=false"]) { host in
            _ = try await host.waitUntilRunning()
            // Disabled at start, http has no socket: starting it would run an instance that listens on nothing.
            for command in ["start", "restart"] {
                let refused = try CommandResult.run(TestHost.inetinfoctl, ["--socket", host.controlSocket, command, "http"])
                #expect(refused.status == 1 && refused.stderr.contains("http cannot be started without a restart of the host"), "\(command): \(refused.stderr)")
            }
            let endless = try UnixClient(path: host.controlSocket)
            var sent = 0
            while sent < 8 << 20, endless.send([UInt8](repeating: UInt8(ascii: "x"), count: 64 * 1024)) { sent += 64 * 1024 }
            #expect(sent < 8 << 20, "the host took \(sent) bytes of one request line")
            #expect(!(try host.status().services.isEmpty), "the host answers after the endless line")

            var idle: [UnixClient] = []
            for _ in 0..<64 { idle.append(try UnixClient(path: host.controlSocket)) }
            let refused = try CommandResult.run(TestHost.inetinfoctl, ["--socket", host.controlSocket, "status"])
            #expect(refused.status == 1)
            #expect(refused.stderr.contains("too many control connections"), "\(refused.stderr)")
            // They said nothing: the host closes them 10 s after they connected, and answers again.
            let answered = try await Deadline.eventually("status once the idle connections are closed", timeout: .seconds(25)) { () -> CommandResult? in
                let result = try CommandResult.run(TestHost.inetinfoctl, ["--socket", host.controlSocket, "status"])
                return result.status == 0 ? result : nil
            }
            #expect(answered.status == 0)
            idle.forEach { $0.close() }
        }
    }

    @Test func aGracefulStopSays421ToAnOpenSMTPSession() async throws {
        try await withHost(["--set", "http.enabled=false"]) { host in
            _ = try await host.waitUntilRunning()
            let client = try SMTPTestClient(port: try host.smtpPort())
            #expect(try client.code() == "220")
            #expect(try client.exchange("EHLO c\r\n") == ["250"])
            host.signal(SIGTERM)
            let reply = try #require(try client.reply(), "a reply before the close")
            #expect(reply.hasPrefix("421 4.3.2"), "\(reply)")
            let (status, reason) = try await host.waitForExit()
            #expect(reason == .exit && status == 0)
        }
    }
}

/// A TCP listener on a free loopback port, to make a port busy.
struct TCPListener {
    let fd: Int32
    let port: Int

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let descriptor = fd
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(descriptor, pointer, length) == 0, listen(descriptor, 1) == 0 else { return -1 }
                return getsockname(descriptor, pointer, &length)
            }
        }
        guard bound == 0 else { throw TestError("cannot listen on a loopback port") }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() { Glibc.close(fd) }
}

/// A Unix stream socket bound at a path.
struct UnixListener {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let descriptor = fd
        let bound = withUnixAddress(path) { bind(descriptor, $0, $1) }
        guard bound == 0, listen(fd, 1) == 0 else { throw TestError("bind \(path): \(String(cString: strerror(errno)))") }
    }

    /// Closes the socket and leaves its file behind, as a killed process does.
    func closeKeepingFile() { Glibc.close(fd) }
}

/// A Unix stream socket connected to a path, with blocking sends that give up after 2 s.
final class UnixClient {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let descriptor = fd
        let connected = withUnixAddress(path) { connect(descriptor, $0, $1) }
        guard connected == 0 else {
            Glibc.close(fd)
            throw TestError("connect \(path): \(String(cString: strerror(errno)))")
        }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Whether all of `bytes` went out (false once the peer closed, or after 2 s without progress).
    func send(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    func close() { Glibc.close(fd) }
}

/// Runs `body` with the `sockaddr_un` of `path` (a test's own short path) and its length.
func withUnixAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        let bytes = Array(path.utf8)
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}
