import Foundation

/// A blocking SMTP client over a real socket, for driving the SMTP service in tests.
public final class SMTPTestClient {
    public let fd: Int32
    private var buffer: [UInt8] = []

    /// Connects and reads nothing yet (call ``reply()`` for the greeting).
    public init(port: Int, timeoutSeconds: Int = 10) throws {
        fd = try TCPTestSocket.connect(port: port, timeoutSeconds: timeoutSeconds)
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

/// Plain blocking TCP for test clients on 127.0.0.1.
public enum TCPTestSocket {
    public static func connect(port: Int, timeoutSeconds: Int = 10) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var interval = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            throw TCPConnectError(port: port, errno: code)
        }
        return fd
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
    public var port: Int
    public var errno: Int32
    public var isRefused: Bool { errno == ECONNREFUSED }
    public var description: String { "connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))" }
}
