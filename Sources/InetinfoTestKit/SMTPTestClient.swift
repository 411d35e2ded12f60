import Foundation

/// A blocking SMTP client over a real socket, for driving the SMTP service in tests.
public final class SMTPTestClient {
    public let fd: Int32
    private var buffer: [UInt8] = []

    /// Connects (from `source` if given) and reads nothing yet (call ``reply()`` for the greeting).
    public init(port: Int, source: String? = nil, timeoutSeconds: Int = 10) throws {
        fd = try TCPTestSocket.connect(port: port, source: source, timeoutSeconds: timeoutSeconds)
    }

    deinit { close(fd) }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard written > 0 else { throw TestHostError("write failed: \(String(cString: strerror(errno)))") }
            offset += written
        }
    }

    /// The next reply with all its lines joined by "\n"; nil when the server closed the connection.
    public func reply() throws -> String? {
        var lines: [String] = []
        while true {
            guard let line = try readLine() else { return lines.isEmpty ? nil : lines.joined(separator: "\n") }
            lines.append(line)
            let bytes = Array(line.utf8)
            if bytes.count < 4 || bytes[3] == UInt8(ascii: " ") { return lines.joined(separator: "\n") }
        }
    }

    /// The three-digit code of the next reply; nil when the connection closed.
    public func code() throws -> String? { try reply().map { String($0.prefix(3)) } }

    /// Sends `text` and returns the codes of the `replies` replies it produces ("EOF" once closed).
    public func exchange(_ text: String, replies count: Int = 1) throws -> [String] {
        try send(text)
        return try (0..<count).map { _ in try code() ?? "EOF" }
    }

    /// Sends one message with PIPELINING, by DATA (dot-stuffed here) or by a single `BDAT … LAST`.
    /// Returns the final reply (e.g. `250 2.0.0 Message accepted for delivery as …`), or nil if the
    /// connection closed.
    public func sendMessage(from sender: String, to recipients: [String], content: Data, useBDAT: Bool) throws -> String? {
        var envelope = "MAIL FROM:<\(sender)>\r\n" + recipients.map { "RCPT TO:<\($0)>\r\n" }.joined()
        if useBDAT {
            envelope += "BDAT \(content.count) LAST\r\n"
            try send(Array(envelope.utf8) + [UInt8](content))
        } else {
            envelope += "DATA\r\n"
            try send(envelope)
        }
        for _ in 0..<(1 + recipients.count) {
            guard let reply = try reply() else { return nil }
            guard reply.hasPrefix("2") else { return reply }
        }
        guard !useBDAT else { return try reply() }
        guard let go = try reply() else { return nil }
        guard go.hasPrefix("354") else { return go }
        try send(Self.dotStuffed(content) + Array(".\r\n".utf8))
        return try reply()
    }

    /// DATA content with leading dots doubled and a final CRLF (RFC 5321 §4.5.2).
    static func dotStuffed(_ content: Data) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(content.count + 16)
        var atLineStart = true
        for byte in content {
            if atLineStart && byte == UInt8(ascii: ".") { out.append(byte) }
            out.append(byte)
            atLineStart = byte == 0x0A
        }
        if !out.isEmpty && out.last != 0x0A { out += [0x0D, 0x0A] }
        return out
    }

    private func readLine() throws -> String? {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                var line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if line.last == 0x0D { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            let count = read(fd, &chunk, chunk.count)
            if count == 0 { return nil }
            if count < 0 {
                if errno == ECONNRESET { return nil }
                throw TestHostError("read: \(String(cString: strerror(errno)))")
            }
            buffer += chunk[..<count]
        }
    }
}

/// Plain blocking TCP for test clients: the one place tests open a connection.
public enum TCPTestSocket {
    /// Connects to `host` (an IPv4 or IPv6 literal; 127.0.0.1 by default) and returns a blocking socket
    /// whose reads and writes time out after `timeoutSeconds`. `source` binds a local address first (the
    /// server sees it as the peer, e.g. 127.0.0.2 for per-client limits); `receiveBuffer` sets SO_RCVBUF
    /// before connecting, so that the advertised window is small from the start.
    public static func connect(port: Int, host: String = "127.0.0.1", source: String? = nil, receiveBuffer: Int32? = nil,
                               timeoutSeconds: Int = 10) throws -> Int32 {
        let isIPv6 = host.contains(":")
        let family = isIPv6 ? AF_INET6 : AF_INET
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestHostError("socket: \(String(cString: strerror(errno)))") }
        var interval = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        do {
            if let source {
                guard withSocketAddress(source, port: 0, { bind(fd, $0, $1) }) == 0 else {
                    throw TestHostError("bind \(source): \(String(cString: strerror(errno)))")
                }
            }
            let result = withSocketAddress(host, port: port) { Glibc.connect(fd, $0, $1) }
            guard result == 0 else { throw TCPConnectError(host: host, port: port, errno: errno) }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Calls `body` with `address` (an IPv4 or IPv6 literal) and `port` as a socket address; -1 with
    /// `errno` EINVAL when the literal does not parse.
    static func withSocketAddress(_ address: String, port: Int, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        if address.contains(":") {
            var ipv6 = sockaddr_in6()
            ipv6.sin6_family = sa_family_t(AF_INET6)
            ipv6.sin6_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
            guard inet_pton(AF_INET6, address, &ipv6.sin6_addr) == 1 else {
                errno = EINVAL
                return -1
            }
            return withUnsafePointer(to: &ipv6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
        var ipv4 = sockaddr_in()
        ipv4.sin_family = sa_family_t(AF_INET)
        ipv4.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        guard inet_pton(AF_INET, address, &ipv4.sin_addr) == 1 else {
            errno = EINVAL
            return -1
        }
        return withUnsafePointer(to: &ipv4) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    /// One `GET` with `Connection: close`; returns the status code and the body.
    public static func httpGet(port: Int, path: String = "/") throws -> (status: Int, body: Data) {
        let fd = try connect(port: port)
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        guard write(fd, request, request.count) == request.count else { throw TestHostError("write failed") }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &chunk, chunk.count)
            if count < 0 { throw TestHostError("read: \(String(cString: strerror(errno)))") }
            if count == 0 { break }
            response += chunk[..<count]
        }
        guard let headerEnd = response.firstRange(of: [13, 10, 13, 10]),
              let status = Int(String(decoding: response.prefix(12).suffix(3), as: UTF8.self))
        else { throw TestHostError("malformed or empty HTTP response (\(response.count) bytes)") }
        return (status, Data(response[headerEnd.upperBound...]))
    }
}

public struct TCPConnectError: Error, CustomStringConvertible, Sendable {
    public var host = "127.0.0.1"
    public var port: Int
    public var errno: Int32
    public var isRefused: Bool { errno == ECONNREFUSED }
    public var description: String { "connect to \(host.contains(":") ? "[\(host)]" : host):\(port): \(String(cString: strerror(errno)))" }
}
