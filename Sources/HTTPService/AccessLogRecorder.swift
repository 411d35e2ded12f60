import NIOCore
import NIOHTTP1

/// Records each request of one connection and its response in the Combined Log Format:
/// `127.0.0.1 - - [29/Nov/2026:04:24:21 +0000] "GET / HTTP/1.1" 200 886 "-" "curl/7.88.1"`.
///
/// Not a handler of its own (a handler in the middle of the pipeline costs a hop and an `NIOAny` cast for
/// every request and response part): ``StaticFileHandler``, which sees every request in turn behind NIO's
/// pipelining handler, tells it of each head, and ``ResponseEncoder``, which sees every response part,
/// of the status, the content and the end. Confined to the connection's event loop.
///
/// The line is formatted into bytes on the event loop, without Foundation, and handed to the
/// ``AccessLogSink``, which writes it in a block off the loop. As nginx does, the quoted fields escape
/// `"`, `\` and every byte outside printable ASCII as `\xHH`: what a client sends cannot forge a line.
final class AccessLogRecorder {
    private let sink: AccessLogSink
    /// The request whose response is awaited (the last one the file handler received).
    private var request: HTTPRequestHead?
    private var status: UInt = 0
    private var bytes = 0
    /// The peer's address, formatted once per connection.
    private var peer: [UInt8]?
    /// The line after the timestamp, reused from request to request.
    private var line: [UInt8] = []

    init(sink: AccessLogSink) { self.sink = sink }

    func requestBegan(_ head: HTTPRequestHead) { request = head }

    func responseBegan(status: UInt) {
        self.status = status
        bytes = 0
    }

    func contentSent(_ count: Int) { bytes += count }

    /// Logs the line of the awaited request, if any: a response with no request received before it (a
    /// 400 for a request line the parser refused, a 408 for a head that never completed) has no line. A
    /// 400 for a malformed body, or a 408 for a body that stalled, is its request's response and is
    /// logged as such; so is a 408 that cuts short a refusal the client is not reading (the line then
    /// says 408).
    func responseEnded(remoteAddress: @autoclosure () -> SocketAddress?) {
        guard let request else { return }
        self.request = nil
        let peer = self.peer ?? Array((remoteAddress()?.ipAddress ?? "-").utf8)
        self.peer = peer
        line.removeAll(keepingCapacity: true)
        Self.format(request: request, status: status, bytes: bytes, into: &line)
        sink.append(peer: peer, rest: line)
    }

    /// `"GET / HTTP/1.1" 200 886 "referer" "user-agent"`: the line after the timestamp.
    static func format(request: HTTPRequestHead, status: UInt, bytes: Int, into line: inout [UInt8]) {
        line.append(UInt8(ascii: "\""))
        escape(request.method.rawValue, into: &line)
        line.append(UInt8(ascii: " "))
        escape(request.uri, into: &line)
        line += " HTTP/".utf8
        decimal(UInt(clamping: request.version.major), into: &line)
        line.append(UInt8(ascii: "."))
        decimal(UInt(clamping: request.version.minor), into: &line)
        line += "\" ".utf8
        decimal(status, into: &line)
        line.append(UInt8(ascii: " "))
        decimal(UInt(clamping: bytes), into: &line)
        line.append(UInt8(ascii: " "))
        // One pass over the fields for both (`HTTPHeaders.first(name:)` is a pass each).
        var referer: String?
        var userAgent: String?
        for (name, value) in request.headers {
            if referer == nil, name.utf8.count == 7, isASCIICaseInsensitive(name, equalTo: "referer") {
                referer = value
            } else if userAgent == nil, name.utf8.count == 10, isASCIICaseInsensitive(name, equalTo: "user-agent") {
                userAgent = value
            }
        }
        quoted(referer, into: &line)
        line.append(UInt8(ascii: " "))
        quoted(userAgent, into: &line)
    }

    /// `name` equals the lowercase `lowercase`, ignoring ASCII case (RFC 9110 §5.1: field names are).
    private static func isASCIICaseInsensitive(_ name: String, equalTo lowercase: StaticString) -> Bool {
        var name = name
        return name.withUTF8 { bytes in
            guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
            let expected = lowercase.utf8Start
            for index in 0..<bytes.count where bytes[index] | 0x20 != expected[index] {
                return false
            }
            return true
        }
    }

    private static func quoted(_ value: String?, into line: inout [UInt8]) {
        guard let value, !value.isEmpty else {
            line += "\"-\"".utf8
            return
        }
        line.append(UInt8(ascii: "\""))
        escape(value, into: &line)
        line.append(UInt8(ascii: "\""))
    }

    private static let hex: StaticString = "0123456789ABCDEF"

    private static func escape(_ text: String, into line: inout [UInt8]) {
        var text = text
        text.withUTF8 { bytes in
            // Most fields need no escape: then they are copied in one go.
            guard let first = bytes.firstIndex(where: { $0 < 0x20 || $0 >= 0x7F || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") })
            else { return line.append(contentsOf: bytes) }
            line.append(contentsOf: bytes[..<first])
            for byte in bytes[first...] {
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), ..<0x20, 0x7F...:
                    line += "\\x".utf8
                    line.append(hex.utf8Start[Int(byte >> 4)])
                    line.append(hex.utf8Start[Int(byte & 0x0F)])
                default:
                    line.append(byte)
                }
            }
        }
    }

    /// `value` in decimal digits, without building a `String`.
    private static func decimal(_ value: UInt, into line: inout [UInt8]) {
        var scale: UInt = 1
        while scale <= value / 10 { scale *= 10 }
        repeat {
            line.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value / scale % 10))
            scale /= 10
        } while scale > 0
    }
}
