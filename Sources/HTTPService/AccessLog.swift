import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Where access log lines go: swift-log, or a file written in blocks.
final class AccessLogSink: Sendable {
    private enum Target {
        case off
        case log(Logger)
        case file(Int32)
    }

    private let target: Target
    // Guards the buffered lines of a file target; handlers on every event loop append to it.
    private let pending = NIOLockedValueBox([UInt8]())

    init(_ setting: HTTPSettings.AccessLog, logger: Logger) throws {
        switch setting {
        case .off: target = .off
        case .log: target = .log(logger)
        case .file(let path):
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else {
                throw HTTPConfigurationError("http.access-log: cannot open \(path): \(String(cString: strerror(errno)))")
            }
            target = .file(fd)
        }
    }

    var enabled: AccessLogSink? {
        if case .off = target { return nil }
        return self
    }

    func write(_ line: String) {
        switch target {
        case .off: break
        case .log(let logger): logger.info("\(line)")
        case .file(let fd):
            // Lines are gathered and written 32 KiB at a time; O_APPEND keeps each block whole.
            let block = pending.withLockedValue { pending -> [UInt8]? in
                pending += line.utf8
                pending.append(0x0A)
                guard pending.count >= 32 * 1024 else { return nil }
                defer { pending.removeAll(keepingCapacity: true) }
                return pending
            }
            if let block { _ = block.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } }
        }
    }

    /// Writes what is buffered and closes the file (the instance ends).
    func close() {
        guard case .file(let fd) = target else { return }
        let block = pending.withLockedValue { pending in
            defer { pending.removeAll() }
            return pending
        }
        _ = block.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        Glibc.close(fd)
    }
}

/// Records each request and its response in the Combined Log Format:
/// `127.0.0.1 - - [29/Nov/2026:04:24:21 +0000] "GET / HTTP/1.1" 200 886 "-" "curl/7.88.1"`.
final class AccessLogHandler: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let sink: AccessLogSink
    private var request: HTTPRequestHead?
    private var status: UInt = 0
    private var bytes = 0

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
                sink.write(Self.line(request: request, status: status, bytes: bytes, peer: context.channel.remoteAddress))
            }
            request = nil
        }
        context.write(data, promise: promise)
    }

    static func line(request: HTTPRequestHead, status: UInt, bytes: Int, peer: SocketAddress?) -> String {
        func quoted(_ value: String?) -> String {
            guard let value, !value.isEmpty else { return "\"-\"" }
            return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        let version = "HTTP/\(request.version.major).\(request.version.minor)"
        return "\(peer?.ipAddress ?? "-") - - [\(Self.timestamp())] \(quoted("\(request.method.rawValue) \(request.uri) \(version)")) \(status) \(bytes) \(quoted(request.headers.first(name: "Referer"))) \(quoted(request.headers.first(name: "User-Agent")))"
    }

    static func timestamp() -> String {
        HTTPDate.text(seconds: time(nil), format: "%d/%b/%Y:%H:%M:%S %z", localTime: true)
    }
}
