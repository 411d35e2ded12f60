import Foundation
import HostControl
import InetinfoTestKit

/// The project's tests drive hosts through InetinfoTestKit; these helpers add what only this package's
/// tests need: the `inetinfoctl` binary, raw sockets and command-line arguments as operators type them.

/// Runs `body` with a host started from `inetinfo` arguments (not waiting for it to run), and always
/// stops it and removes its files afterwards.
func withHost(_ arguments: [String] = [], environment: [String: String] = [:],
              _ body: (TestHost) async throws -> Void) async throws {
    var configuration = TestHost.Configuration()
    configuration.faultInjection = false
    var remaining = arguments[...]
    var extra: [String] = []
    while let argument = remaining.popFirst() {
        switch argument {
        case "--enable-fault-injection": configuration.faultInjection = true
        case "--simulate-ms02-012": configuration.simulateMS02012 = true
        case "--isolation": configuration.isolation = remaining.popFirst() ?? "isolated"
        default: extra.append(argument)
        }
    }
    configuration.arguments = extra
    configuration.environment = environment
    let host = try TestHost.launch(configuration)
    do {
        try await body(host)
    } catch {
        await host.stop()
        throw error
    }
    await host.stop()
}

extension TestHost {
    static var inetinfoctl: String {
        (try? TestHost.locateBinary()).map { URL(fileURLWithPath: $0).deletingLastPathComponent().appendingPathComponent("inetinfoctl").path }
            ?? "inetinfoctl"
    }

    var socketPath: String { controlSocket }

    /// Runs `inetinfoctl --socket <ours> ARGS` (as `nobody` when asked).
    @discardableResult
    func ctl(_ arguments: [String], asNobody: Bool = false) throws -> CommandResult {
        // The documented form: inetinfoctl [--socket PATH] COMMAND …
        try CommandResult.run(Self.inetinfoctl, ["--socket", controlSocket] + arguments, asNobody: asNobody)
    }

    /// The first listening port of `service` in `status`; throws (never traps: a trap would end the
    /// whole test run) when there is none.
    func port(of service: String, in status: HostStatus) throws -> Int {
        guard let address = status.services.first(where: { $0.name == service })?.listen.first,
              let port = address.split(separator: ":").last.flatMap({ Int($0) })
        else { throw TestError("\(service) has no listening port in the status: \(status.services.map(\.listen))") }
        return port
    }

    func smtpPort() throws -> Int { try port(of: "smtp") }

    /// Files in `new/` (or `tmp/`) of `address`'s Maildir.
    func maildir(_ address: String, _ folder: String = "new") -> [URL] {
        deliveredMessages(to: address, folder: folder).map { URL(fileURLWithPath: $0.path) }
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

typealias TestError = TestHostError

func eventually<T>(_ what: String, timeout: Duration, _ probe: () throws -> T?) async throws -> T {
    try await Deadline.eventually(what, timeout: timeout, probe)
}

/// Raw TCP for malformed input.
enum TCP {
    static func connect(port: Int, timeout: Int = 5) throws -> Int32 {
        try TCPTestSocket.connect(port: port, timeoutSeconds: timeout)
    }

    static func send(_ fd: Int32, _ text: String) throws {
        let bytes = Array(text.utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw TestError("write failed") }
    }

    /// Reads until the server closes the connection (EOF, or a reset after it sent its answer); throws
    /// when the read timeout (the socket's, 5 s by default) passes first: a server that never closes must
    /// not pass for one that did.
    static func readUntilClosed(_ fd: Int32) throws -> String {
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = Glibc.read(fd, &chunk, chunk.count)
            if count > 0 {
                data += chunk[..<count]
                continue
            }
            if count == 0 || errno == ECONNRESET { return String(decoding: data, as: UTF8.self) }
            if errno == EINTR { continue }
            throw TestError("the server did not close the connection (\(String(cString: strerror(errno)))) after sending \(String(decoding: data.prefix(200), as: UTF8.self).debugDescription)")
        }
    }

    /// Reads until `terminator` appears (or EOF / timeout): for answers on a connection that stays open.
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
        return try readUntilClosed(fd)
    }
}

typealias SMTPConnection = SMTPTestClient
