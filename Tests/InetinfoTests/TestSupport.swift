import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// The project's tests drive hosts through InetinfoTestKit; these helpers add what only this package's
/// tests need: the `inetinfoctl` binary, raw sockets and command-line arguments as operators type them.
///
/// To extend the suites, use one tool per job:
/// - a host: `TestHost.with(configuration) { host in … }` (or `withHost(arguments)` below for arguments
///   as typed on a command line); it is always stopped and its files removed;
/// - SMTP: `SMTPTestClient` (blocking, one reply at a time, `sendMessage` for DATA and BDAT);
/// - anything else over TCP (HTTP, malformed input, floods, source addresses, IPv6): ``TestSocket``;
///   `rawHTTP` and `TCPTestSocket.httpGet` are one-request shorthands over the same connections;
/// - waiting: `Deadline.eventually(what, timeout:) { condition }`; never a sleep in place of a condition.

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

// Waiting: `Deadline.eventually` (InetinfoTestKit) is the one wait helper. It polls a condition until a
// deadline; nothing in these tests sleeps in place of a condition.

/// The one raw socket client of these tests (SMTP sessions go through `SMTPTestClient`, which speaks the
/// protocol over the same kind of connection): connected by `TCPTestSocket.connect` (IPv4 or IPv6, an
/// optional source address in 127.0.0.0/8, an optional small receive buffer), then non-blocking, so that
/// every send and read has a deadline and a read tells an orderly close (EOF), a reset and a timeout apart.
final class TestSocket {
    enum End: Equatable, CustomStringConvertible {
        /// The server closed the connection in order (read returned 0).
        case eof
        /// The connection was reset (ECONNRESET, EPIPE).
        case reset
        /// Nothing more arrived before the deadline: the connection is still open.
        case timeout
        /// The terminator asked for was found (the connection may still be open).
        case found
        /// The byte limit asked for was reached.
        case limit

        var description: String {
            switch self {
            case .eof: "EOF"
            case .reset: "reset"
            case .timeout: "read timeout"
            case .found: "found"
            case .limit: "limit"
            }
        }

        var isClosed: Bool { self == .eof || self == .reset }
    }

    /// The descriptor; -1 once ``close()`` was called.
    private(set) var fd: Int32

    init(port: Int, host: String = "127.0.0.1", source: String? = nil, receiveBuffer: Int32? = nil,
         connectTimeoutSeconds: Int = 5) throws {
        fd = try TCPTestSocket.connect(port: port, host: host, source: source, receiveBuffer: receiveBuffer,
                                       timeoutSeconds: connectTimeoutSeconds)
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    deinit { close() }

    /// Closes the connection now (otherwise it closes when the client is released).
    func close() {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
    }

    private static func milliseconds(until deadline: ContinuousClock.Instant) -> Int32 {
        let left = deadline - .now
        guard left > .zero else { return 0 }
        let (seconds, attoseconds) = left.components
        return Int32(min(seconds * 1000 + attoseconds / 1_000_000_000_000_000 + 1, 60_000))
    }

    /// Waits until the socket is readable or writable; false at the deadline.
    private func wait(for events: Int32, until deadline: ContinuousClock.Instant) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(events), revents: 0)
        while true {
            let result = poll(&entry, 1, Self.milliseconds(until: deadline))
            if result > 0 { return true }
            if result < 0 && errno == EINTR { continue }
            return false
        }
    }

    /// Sends all of `bytes` within `timeout`, or throws.
    func send(_ bytes: [UInt8], timeout: Duration = .seconds(5)) throws {
        let deadline = ContinuousClock.now + timeout
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent > 0 {
                offset += sent
                continue
            }
            if sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                guard wait(for: Int32(POLLOUT), until: deadline) else {
                    throw TestHostError("send: only \(offset) of \(bytes.count) bytes went out within \(timeout)")
                }
                continue
            }
            throw TestHostError("send: \(String(cString: strerror(errno)))")
        }
    }

    func send(_ text: String, timeout: Duration = .seconds(5)) throws { try send(Array(text.utf8), timeout: timeout) }

    /// Reads until `terminator` has arrived, `limit` bytes were read, the connection closed or `timeout`
    /// passed. Keeps at most `keep` bytes (counting the rest).
    func read(until terminator: [UInt8]? = nil, limit: Int = Int.max, keep: Int = 1 << 20,
              timeout: Duration = .seconds(5)) -> (data: [UInt8], count: Int, end: End) {
        let deadline = ContinuousClock.now + timeout
        var data: [UInt8] = []
        var count = 0
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            if let terminator, data.firstRange(of: terminator) != nil { return (data, count, .found) }
            if count >= limit { return (data, count, .limit) }
            let received = recv(fd, &chunk, min(chunk.count, limit - count), 0)
            if received > 0 {
                count += received
                if data.count < keep { data += chunk[..<min(received, keep - data.count)] }
                continue
            }
            if received == 0 { return (data, count, .eof) }
            switch errno {
            case EAGAIN, EWOULDBLOCK, EINTR:
                if ContinuousClock.now >= deadline || !wait(for: Int32(POLLIN), until: deadline) {
                    // One last look: poll may have timed out just as something arrived.
                    if ContinuousClock.now >= deadline { return (data, count, .timeout) }
                }
            default:
                // ECONNRESET, EPIPE and anything else: the connection is gone.
                return (data, count, .reset)
            }
        }
    }

    func readText(until terminator: String? = nil, timeout: Duration = .seconds(5)) -> (text: String, end: End) {
        let result = read(until: terminator.map { Array($0.utf8) }, timeout: timeout)
        return (String(decoding: result.data, as: UTF8.self), result.end)
    }

    /// Everything until the server closes the connection (EOF, or a reset after it sent its answer);
    /// throws when `timeout` passes first: a server that never closes must not pass for one that did.
    func readUntilClosed(timeout: Duration = .seconds(5)) throws -> String {
        let result = read(keep: .max, timeout: timeout)
        let text = String(decoding: result.data, as: UTF8.self)
        guard result.end.isClosed else {
            throw TestHostError("the server did not close the connection within \(timeout) after sending \(text.prefix(200).debugDescription)")
        }
        return text
    }

    struct Flood: CustomStringConvertible {
        var sent = 0
        var stopped = ""
        var peakRSS = 0
        var seconds = 0.0
        var description: String {
            "sent \(HostileSupport.mib(sent)) in \(String(format: "%.1f", seconds)) s, stopped by \(stopped), peak host RSS \(HostileSupport.mib(peakRSS))"
        }
    }

    /// Pipelines `unit` again and again, reading nothing, until `total` bytes went out (never more: the
    /// bytes sent are exactly the first `sent` bytes of `unit` repeated), the server stopped taking them for
    /// `stall` (back-pressure), closed the connection, `deadline` passed, or the host's RSS grew by more
    /// than `rssGuard` over `baseline` (to protect the machine from a server that buffers everything).
    func flood(_ unit: [UInt8], total: Int, stall: Duration = .seconds(3), deadline timeout: Duration = .seconds(25),
               hostPID: Int32, baselineRSS: Int, rssGuard: Int = 400 << 20) -> Flood {
        var chunk: [UInt8] = []
        while chunk.count < 64 * 1024 { chunk += unit }
        let started = ContinuousClock.now
        let deadline = started + timeout
        var result = Flood()
        var lastProgress = started
        var lastCheck = started
        var offset = 0
        while result.sent < total {
            let now = ContinuousClock.now
            if now >= deadline { result.stopped = "the deadline"; break }
            if now - lastCheck >= .milliseconds(100) {
                lastCheck = now
                let rss = HostileSupport.memory(of: hostPID).rss
                result.peakRSS = max(result.peakRSS, rss)
                if rss - baselineRSS > rssGuard { result.stopped = "the RSS guard (\(HostileSupport.mib(rss - baselineRSS)) growth)"; break }
            }
            let length = min(chunk.count - offset, total - result.sent)
            let sent = chunk[offset..<(offset + length)].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent > 0 {
                result.sent += sent
                offset = (offset + sent) % chunk.count
                lastProgress = ContinuousClock.now
                continue
            }
            if sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                if ContinuousClock.now - lastProgress >= stall { result.stopped = "back-pressure (no progress for \(stall))"; break }
                _ = wait(for: Int32(POLLOUT), until: min(ContinuousClock.now + .milliseconds(100), deadline))
                continue
            }
            result.stopped = "the server closing the connection (\(String(cString: strerror(errno))))"
            break
        }
        if result.stopped.isEmpty { result.stopped = "the target size" }
        result.seconds = Double((ContinuousClock.now - started).components.seconds)
            + Double((ContinuousClock.now - started).components.attoseconds) / 1e18
        result.peakRSS = max(result.peakRSS, HostileSupport.memory(of: hostPID).rss)
        return result
    }

    /// One request on its own connection; the whole answer (until close or `timeout`).
    static func exchange(port: Int, _ request: String, source: String? = nil,
                         timeout: Duration = .seconds(5)) throws -> (text: String, end: End) {
        let client = try TestSocket(port: port, source: source)
        try client.send(request)
        return client.readText(timeout: timeout)
    }
}

/// Sends raw bytes and returns everything the server sent until it closed; throws if it did not close
/// within the timeout.
func rawHTTP(port: Int, _ request: String, timeout: Duration = .seconds(5)) throws -> String {
    let client = try TestSocket(port: port)
    try client.send(request)
    return try client.readUntilClosed(timeout: timeout)
}

/// The first line of an HTTP response.
func statusLine(_ response: String) -> String {
    // "\r\n" is one Character in Swift: split on the string, not on "\r".
    response.components(separatedBy: "\r\n")[0]
}

/// The value of header `name` in a response head, if present.
func header(_ name: String, in response: String) -> String? {
    let head = response.components(separatedBy: "\r\n\r\n")[0]
    for line in head.components(separatedBy: "\r\n").dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        if line[..<colon].lowercased() == name.lowercased() {
            return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
    }
    return nil
}

extension SMTPTestClient {
    /// The next reply, "EOF" when the server closed the connection, or "no reply (…)" after the read timeout.
    func next() -> String {
        do { return try reply() ?? "EOF" } catch { return "no reply (\(error))" }
    }

    /// Reads the greeting and says EHLO; returns nothing, expects both to be positive.
    func hello(_ name: String = "client.test") throws {
        #expect(try code() == "220")
        try send("EHLO \(name)\r\n")
        #expect(try code() == "250")
    }
}
