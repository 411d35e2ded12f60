import Foundation
import Glibc

/// Why `inetinfoctl` could not get an answer, in words that say what to do.
public enum ControlClientError: Error, CustomStringConvertible, Sendable {
    case noHost(path: String)
    case permissionDenied(path: String)
    case timedOut(path: String, seconds: Int)
    case connectionClosed(path: String)
    case system(String, errno: Int32)
    case malformedReply(String)

    public var description: String {
        switch self {
        case .noHost(let path):
            return "no host is listening on \(path) — is inetinfo running? (use --socket PATH for another host)"
        case .permissionDenied(let path):
            return "permission denied on \(path) — only root and the host's own user may control it"
        case .timedOut(let path, let seconds):
            return "the host on \(path) did not answer within \(seconds) s — it may be wedged"
        case .connectionClosed(let path):
            return "the host on \(path) closed the connection without an answer"
        case .system(let operation, let code):
            return "\(operation): \(String(cString: strerror(code)))"
        case .malformedReply(let text):
            return "the host sent a reply this inetinfoctl does not understand: \(text)"
        }
    }
}

/// A blocking client of the control socket, for `inetinfoctl` and tests.
public struct ControlClient: Sendable {
    public var path: String
    /// Seconds to wait for each reply; 0 waits forever (`events --follow`).
    public var timeout: Int

    public init(path: String, timeout: Int = 10) {
        self.path = path
        self.timeout = timeout
    }

    /// Sends one request and returns its reply.
    public func send(_ request: ControlRequest) throws -> ControlReply {
        var reply: ControlReply?
        try exchange(request) { reply = $0; return false }
        guard let reply else { throw ControlClientError.connectionClosed(path: path) }
        return reply
    }

    /// Sends one request and hands every reply line to `onReply` until it returns `false` or the
    /// host closes the connection.
    public func exchange(_ request: ControlRequest, onReply: (ControlReply) throws -> Bool) throws {
        let fd = try connect()
        defer { close(fd) }
        var data = try ControlJSON.encoder().encode(request)
        data.append(0x0A)
        try data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0 {
                    if errno == EINTR { continue }
                    // The host may have refused us (and said why) before reading the request: read on.
                    if errno == EPIPE || errno == ECONNRESET { break }
                    throw ControlClientError.system("write to \(path)", errno: errno)
                }
                offset += written
            }
        }
        let decoder = ControlJSON.decoder()
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            while let newline = buffer.firstIndex(of: 0x0A) {
                let line = Data(buffer[..<newline])
                buffer.removeSubrange(...newline)
                let reply: ControlReply
                do {
                    reply = try decoder.decode(ControlReply.self, from: line)
                } catch {
                    throw ControlClientError.malformedReply(String(decoding: line, as: UTF8.self))
                }
                if try !onReply(reply) { return }
            }
            let count = read(fd, &chunk, chunk.count)
            if count == 0 || (count < 0 && errno == ECONNRESET && buffer.isEmpty) { return }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw ControlClientError.timedOut(path: path, seconds: timeout) }
                throw ControlClientError.system("read from \(path)", errno: errno)
            }
            buffer.append(contentsOf: chunk[..<count])
        }
    }

    /// Whether something accepts connections on the socket (used to refuse a second host).
    public func isHostListening() -> Bool {
        guard let fd = try? connect() else { return false }
        close(fd)
        return true
    }

    private func connect() throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlClientError.system("socket", errno: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            close(fd)
            throw ControlClientError.system("socket path \(path) is longer than \(capacity - 1) bytes", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            let code = errno
            close(fd)
            switch code {
            case ENOENT, ECONNREFUSED, ENOTDIR: throw ControlClientError.noHost(path: path)
            case EACCES, EPERM: throw ControlClientError.permissionDenied(path: path)
            default: throw ControlClientError.system("connect to \(path)", errno: code)
            }
        }
        if timeout > 0 {
            var interval = timeval(tv_sec: timeout, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        }
        return fd
    }
}
