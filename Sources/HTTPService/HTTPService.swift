import Glibc
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Supervision

/// The `http` hosted service: HTTP/1.1 static files from the web root, as a pipeline of small handlers.
///
/// Inbound order: connection limit → activity marker → HTTP decoder → timeouts → pipelining (NIO) →
/// access log → request guard (parser errors, method, limits, body) → static files.
public struct HTTPService: HostedService {
    public let name = "http"
    let settings: HTTPSettings
    let threads: Int
    let connections: ConnectionLimiter

    public init(settings: HTTPSettings, threads: Int = 1) {
        self.settings = settings
        self.threads = threads
        connections = ConnectionLimiter(limit: settings.maxConnections)
    }

    public func run(_ context: InstanceContext) async throws {
        let settings = self.settings
        let connections = self.connections
        let accessLog = try AccessLogSink(settings.accessLog, logger: context.logger)
        defer { accessLog.close() }
        var limits = NIOHTTPDecoderLimitConfiguration()
        // The parser's own ceiling: beyond it a request is cut off with 431. Below it, RequestGuard answers
        // 414 for a long request line and 431 for a large header block with the configured limits.
        limits.maxHeaderFieldSize = max(256 * 1024, settings.maxRequestLine, settings.maxHeaderSize)
        limits.maxHeaderListSize = max(256 * 1024, settings.maxRequestLine + settings.maxHeaderSize)
        limits.maxHeaderFieldCount = settings.maxHeaders
        let decoderLimits = limits
        let files = FileCache(capacity: settings.fileCacheSize)
        try await ServerInstance.run(context, threads: threads) { channel in
            channel.eventLoop.makeCompletedFuture {
                let pipeline = channel.pipeline.syncOperations
                let timeouts = RequestTimeoutHandler(keepAlive: .seconds(Int64(settings.keepAliveTimeoutSeconds)),
                                                     head: .seconds(Int64(settings.headerTimeoutSeconds)))
                try pipeline.addHandler(ConnectionLimitHandler(limiter: connections))
                try pipeline.addHandler(RequestActivityMarker(timeouts: timeouts))
                try pipeline.addHandler(ResponseEncoder(timeouts: timeouts))
                try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes,
                                                                                 limitConfiguration: decoderLimits)))
                // Before the pipelining handler: a 408 for a head that never completed answers no
                // request that handler knows of.
                try pipeline.addHandler(timeouts)
                try pipeline.addHandler(HTTPServerPipelineHandler())
                if let accessLog = accessLog.enabled { try pipeline.addHandler(AccessLogHandler(sink: accessLog)) }
                try pipeline.addHandler(RequestGuard(settings: settings))
                try pipeline.addHandler(StaticFileHandler(root: settings.webRoot, cache: files))
            }
        }
    }
}

/// Refuses connections past `http.max-connections` with a 503 written before any HTTP handler runs.
final class ConnectionLimitHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let limiter: ConnectionLimiter
    private var admitted = false

    init(limiter: ConnectionLimiter) { self.limiter = limiter }

    func channelActive(context: ChannelHandlerContext) {
        guard limiter.enter() else {
            let refusal = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                + "Date: \(HTTPDate.format(seconds: time(nil)))\r\n\r\n"
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: refusal))).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        admitted = true
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if admitted { context.fireChannelRead(data) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if admitted { limiter.leave() }
        admitted = false
        context.fireChannelInactive()
    }
}
