import NIOCore
import NIOHTTP1

/// Records each request and its response in the Combined Log Format:
/// `127.0.0.1 - - [29/Nov/2026:04:24:21 +0000] "GET / HTTP/1.1" 200 886 "-" "curl/7.88.1"`.
///
/// The line is formatted into bytes on the event loop, without Foundation, and handed to the
/// ``AccessLogSink``, which writes it in a block off the loop. As nginx does, the quoted fields escape
/// `"`, `\` and every byte outside printable ASCII as `\xHH`: what a client sends cannot forge a line.
final class AccessLogHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let sink: AccessLogSink
    private var request: HTTPRequestHead?
    private var status: UInt = 0
    private var bytes = 0
    /// The peer's address, formatted once per connection.
    private var peer: [UInt8]?
    /// The line after the timestamp, reused from request to request.
    private var line: [UInt8] = []

    init(sink: AccessLogSink) { self.sink = sink }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            request = head
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head):
            status = head.status.code
            bytes = 0
        case .body(.byteBuffer(let buffer)):
            bytes += buffer.readableBytes
        case .body(.fileRegion(let region)):
            bytes += region.readableBytes
        case .end:
            if let request {
                let peer = self.peer ?? Array((context.channel.remoteAddress?.ipAddress ?? "-").utf8)
                self.peer = peer
                line.removeAll(keepingCapacity: true)
                Self.format(request: request, status: status, bytes: bytes, into: &line)
                sink.append(peer: peer, rest: line)
            }
            request = nil
        }
        context.write(data, promise: promise)
    }

    /// `"GET / HTTP/1.1" 200 886 "referer" "user-agent"`: the line after the timestamp.
    static func format(request: HTTPRequestHead, status: UInt, bytes: Int, into line: inout [UInt8]) {
        line.append(UInt8(ascii: "\""))
        escape(request.method.rawValue.utf8, into: &line)
        line.append(UInt8(ascii: " "))
        escape(request.uri.utf8, into: &line)
        line += " HTTP/".utf8
        decimal(request.version.major, into: &line)
        line.append(UInt8(ascii: "."))
        decimal(request.version.minor, into: &line)
        line += "\" ".utf8
        decimal(Int(clamping: status), into: &line)
        line.append(UInt8(ascii: " "))
        decimal(bytes, into: &line)
        line.append(UInt8(ascii: " "))
        quoted(request.headers.first(name: "Referer"), into: &line)
        line.append(UInt8(ascii: " "))
        quoted(request.headers.first(name: "User-Agent"), into: &line)
    }

    private static func quoted(_ value: String?, into line: inout [UInt8]) {
        guard let value, !value.isEmpty else {
            line += "\"-\"".utf8
            return
        }
        line.append(UInt8(ascii: "\""))
        escape(value.utf8, into: &line)
        line.append(UInt8(ascii: "\""))
    }

    private static let hex = Array("0123456789ABCDEF".utf8)

    private static func escape(_ text: String.UTF8View, into line: inout [UInt8]) {
        // Most fields need no escape: then they are copied in one go.
        if text.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            return line.append(contentsOf: text)
        }
        for byte in text {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), ..<0x20, 0x7F...:
                line += "\\x".utf8
                line.append(hex[Int(byte >> 4)])
                line.append(hex[Int(byte & 0x0F)])
            default:
                line.append(byte)
            }
        }
    }

    private static func decimal(_ value: Int, into line: inout [UInt8]) {
        line += String(value).utf8
    }
}
