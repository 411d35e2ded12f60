import CoreMetrics
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
    /// The service's, not an instance's: a replacement serves its first requests from what its
    /// predecessors resolved (every hit is revalidated, so nothing an instance left there can be stale).
    let files: FileCache

    public init(settings: HTTPSettings, threads: Int = 1) {
        self.settings = settings
        self.threads = threads
        connections = ConnectionLimiter(limit: settings.maxConnections, perClientLimit: settings.maxConnectionsPerClient)
        files = FileCache(capacity: settings.fileCacheSize)
    }

    public func run(_ context: InstanceContext) async throws {
        let settings = self.settings
        let connections = self.connections
        let files = self.files
        let accessLog = try AccessLogSink.make(settings.accessLog, logger: context.logger)
        defer { accessLog?.close() }
        // A host that keeps no metrics gets a no-op factory: then no exchange is timed or counted at all.
        let metrics = context.metrics is NOOPMetricsHandler ? nil : HTTPMetrics(factory: context.metrics)
        try await ServerInstance.run(context, threads: threads, sendTimeout: .seconds(Int64(settings.sendTimeoutSeconds)),
                                     refusal: Self.quarantineRefusal) { channel in
            channel.eventLoop.makeCompletedFuture {
                try Self.addHandlers(to: channel.pipeline.syncOperations, settings: settings, connections: connections,
                                     files: files, accessLog: accessLog, metrics: metrics)
            }
        }
    }

    /// What a peer in the host's quarantine gets instead of an answer: its request is never read.
    static let quarantineRefusal: String = {
        let body = "Forbidden: this address is quarantined after its input crashed a service.\n"
        return "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
    }()

    /// The handlers of one connection, in order; the fuzzer installs the very same ones on an
    /// `EmbeddedChannel`.
    static func addHandlers(to pipeline: ChannelPipeline.SynchronousOperations, settings: HTTPSettings,
                            connections: ConnectionLimiter, files: FileCache, accessLog: AccessLogSink?,
                            metrics: HTTPMetrics?) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        // The parser's own ceiling: beyond it a request is cut off with 431. Below it, RequestGuard answers
        // 414 for a long request line and 431 for a large header block with the configured limits.
        limits.maxHeaderFieldSize = max(256 * 1024, settings.maxRequestLine, settings.maxHeaderSize)
        limits.maxHeaderListSize = max(256 * 1024, settings.maxRequestLine + settings.maxHeaderSize)
        limits.maxHeaderFieldCount = settings.maxHeaders
        // The timeout handler sees each request head, the encoder each response: between them they time
        // and count the exchanges, without a handler of their own (each one is a hop per read and write).
        let meter = metrics.map(ExchangeMeter.init(metrics:))
        let recorder = accessLog.map(AccessLogRecorder.init(sink:))
        let timeouts = RequestTimeoutHandler(keepAlive: .seconds(Int64(settings.keepAliveTimeoutSeconds)),
                                             head: .seconds(Int64(settings.headerTimeoutSeconds)), meter: meter)
        try pipeline.addHandler(ConnectionLimitHandler(limiter: connections, metrics: metrics))
        let pacer = ResponsePacer()
        try pipeline.addHandler(RequestActivityMarker(timeouts: timeouts, pacer: pacer))
        let encoder = ResponseEncoder(timeouts: timeouts, meter: meter, accessLog: recorder)
        try pipeline.addHandler(encoder)
        // The decoder keeps only a head's unfinished field between reads, except after a request that asks
        // for an upgrade (or a CONNECT): NIO's parser then stops and keeps whatever follows for an upgrader
        // this server does not have. The bound makes that a closed connection instead of memory without
        // end (RequestGuard closes such a connection after its answer).
        let bufferLimit = max(limits.maxHeaderFieldSize, limits.maxHeaderListSize) + 64 * 1024
        try pipeline.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes,
                                                                         limitConfiguration: limits),
                                                     maximumBufferSize: bufferLimit))
        // Before the pipelining handler: a 408 for a head that never completed answers no
        // request that handler knows of.
        try pipeline.addHandler(timeouts)
        try pipeline.addHandler(HTTPServerPipelineHandler())
        try pipeline.addHandler(StaticFileHandler(settings: settings, cache: files, pacer: pacer, encoder: encoder, accessLog: recorder))
    }
}

/// Refuses connections past `http.max-connections`, or past `http.max-connections-per-client` from one
/// address, with a 503 written before any HTTP handler runs.
final class ConnectionLimitHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let limiter: ConnectionLimiter
    private let metrics: HTTPMetrics?
    /// The peer address that holds a slot, once admitted.
    private var admitted: String??

    init(limiter: ConnectionLimiter, metrics: HTTPMetrics?) {
        self.limiter = limiter
        self.metrics = metrics
    }

    func channelActive(context: ChannelHandlerContext) {
        let client = context.channel.remoteAddress?.ipAddress
        guard limiter.enter(client: client) == .admitted else {
            let refusal = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                + "Date: \(HTTPDate.format(seconds: time(nil)))\r\n\r\n"
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: refusal))).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        admitted = .some(client)
        metrics?.connectionsTotal.increment()
        metrics?.connectionsOpen.increment()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if admitted != nil { context.fireChannelRead(data) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let client = admitted {
            limiter.leave(client: client)
            metrics?.connectionsOpen.decrement()
        }
        admitted = nil
        context.fireChannelInactive()
    }
}
