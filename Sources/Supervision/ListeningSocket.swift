import Glibc
import NIOCore

/// A listening TCP socket owned by the host for the whole life of the process.
///
/// Service instances never own it: each gets its own `dup()` (``duplicateForInstance()``), which the
/// instance's event loop adopts and closes when the instance ends. The original stays open, so a restart
/// never closes the port: connections that arrive in between wait in the kernel's backlog.
public final class ListeningSocket: Sendable {
    /// The service the socket belongs to (systemd's `FileDescriptorName=`).
    public let name: String
    /// The host-owned descriptor (close-on-exec).
    public let fd: Int32
    /// The bound address, `127.0.0.1:2525` or `[::1]:8080`.
    public let address: String
    /// The listeners of failed instances on this socket that are still being closed.
    public let handover = ListenerHandover()

    private init(name: String, fd: Int32, address: String) {
        self.name = name
        self.fd = fd
        self.address = address
    }

    /// Creates, binds and listens on `endpoint` (`HOST:PORT`, `[V6]:PORT`; port 0 picks a free one).
    public static func bind(name: String, endpoint: String, backlog: Int32 = 1024) throws -> ListeningSocket {
        let (host, port) = try Self.split(endpoint: endpoint)
        let address: SocketAddress
        do {
            address = try SocketAddress.makeAddressResolvingHost(host, port: port)
        } catch {
            throw ListeningSocketError(endpoint: endpoint, operation: "resolve", errno: nil, detail: "\(error)")
        }
        let family = address.protocol.rawValue
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ListeningSocketError(endpoint: endpoint, operation: "socket", errno: errno) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if family == AF_INET6 {
            // `[::]` should mean IPv6 only; IPv4 gets its own listen address.
            _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let bound = address.withSockAddr { pointer, size in Glibc.bind(fd, pointer, socklen_t(size)) }
        guard bound == 0 else {
            let code = errno
            Glibc.close(fd)
            throw ListeningSocketError(endpoint: endpoint, operation: "bind", errno: code)
        }
        guard listen(fd, backlog) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw ListeningSocketError(endpoint: endpoint, operation: "listen", errno: code)
        }
        return ListeningSocket(name: name, fd: fd, address: try localAddress(of: fd, endpoint: endpoint))
    }

    /// Takes ownership of a socket that is already listening (socket activation).
    public static func adopt(name: String, fd: Int32) throws -> ListeningSocket {
        var listening: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening == 1 else {
            throw ListeningSocketError(endpoint: "fd \(fd) (\(name))", operation: "adopt", errno: nil,
                                       detail: "not a listening stream socket")
        }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return ListeningSocket(name: name, fd: fd, address: try localAddress(of: fd, endpoint: "fd \(fd)"))
    }

    /// A new descriptor for the same socket, for one service instance to adopt and close.
    public func duplicateForInstance() throws -> Int32 {
        let copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw ListeningSocketError(endpoint: address, operation: "dup", errno: errno) }
        return copy
    }

    /// Closes the host's descriptor: the port closes once no instance holds a duplicate.
    public func close() {
        Glibc.close(fd)
    }

    /// `HOST:PORT` or `[V6]:PORT` as host and port; throws when it is neither (checked with the
    /// configuration, before anything binds).
    public static func split(endpoint: String) throws(ListeningSocketError) -> (String, Int) {
        guard let colon = endpoint.lastIndex(of: ":"),
              let port = Int(endpoint[endpoint.index(after: colon)...]), (0...65535).contains(port)
        else {
            throw ListeningSocketError(endpoint: endpoint, operation: "parse", errno: nil,
                                       detail: "expected HOST:PORT, e.g. 127.0.0.1:2525 or [::1]:2525")
        }
        var host = String(endpoint[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty || host == "*" { host = "0.0.0.0" }
        return (host, port)
    }

    private static func decode(_ text: [CChar]) -> String {
        String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func localAddress(of fd: Int32, endpoint: String) throws -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard result == 0 else { throw ListeningSocketError(endpoint: endpoint, operation: "getsockname", errno: errno) }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                    var raw = address.pointee.sin_addr
                    inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
                    return "\(decode(text)):\(UInt16(bigEndian: address.pointee.sin_port))"
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                    var raw = address.pointee.sin6_addr
                    inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
                    return "[\(decode(text))]:\(UInt16(bigEndian: address.pointee.sin6_port))"
                }
            }
        default:
            return endpoint
        }
    }
}

/// Binding, adopting or duplicating a listening socket failed.
public struct ListeningSocketError: Error, CustomStringConvertible, Sendable {
    public var endpoint: String
    public var operation: String
    public var errno: Int32?
    public var detail: String?

    public init(endpoint: String, operation: String, errno: Int32?, detail: String? = nil) {
        self.endpoint = endpoint
        self.operation = operation
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        var text = "cannot \(operation) \(endpoint)"
        if let errno { text += ": \(String(cString: strerror(errno)))" }
        if let detail { text += ": \(detail)" }
        return text
    }
}
