import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Supervision

/// The admin listener (`admin.listen`, or systemd's socket named `admin`): `/metrics` in the Prometheus
/// text format, `/healthz` and `/readyz` for probes (Kubernetes' liveness and readiness, a load balancer's
/// health check).
///
/// It runs on an event loop of its own and reads only what is kept under locks (the supervisor's latest
/// snapshots, its health): it answers while the supervisor's loop is wedged, and `/healthz` then says so.
/// Member of the host's service group: it starts before the services and stops after them, so `/readyz`
/// turns 503 while they stop.
struct AdminServer: Service {
    let socket: ListeningSocket
    let metrics: MetricsExposition
    let supervisor: Supervisor
    let logger: Logger

    /// Connections at once, and from one address: a few scrapers and probers need a handful; past it a
    /// connection is closed at once, so that nobody can hold the listener's descriptors.
    static let maximumConnections = 32
    static let maximumConnectionsPerClient = 8

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // The exposition is built here, off the listener's loop: /healthz and /readyz answer meanwhile.
        let exposition = NIOThreadPool(numberOfThreads: 1)
        exposition.start()
        do {
            try await serve(group: group, exposition: exposition)
        } catch {
            try? await exposition.shutdownGracefully()
            try? await group.shutdownGracefully()
            throw error
        }
        try? await exposition.shutdownGracefully()
        try? await group.shutdownGracefully()
    }

    private func serve(group: MultiThreadedEventLoopGroup, exposition: NIOThreadPool) async throws {
        let metrics = self.metrics
        let supervisor = self.supervisor
        let connections = ConnectionLimiter(limit: Self.maximumConnections, perClientLimit: Self.maximumConnectionsPerClient)
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                let client = channel.remoteAddress?.ipAddress
                guard connections.enter(client: client) == .admitted else { return channel.close() }
                channel.closeFuture.whenComplete { _ in connections.leave(client: client) }
                return channel.eventLoop.makeCompletedFuture {
                    // Nothing is read while answers wait to be sent: a client that asks and never reads
                    // holds one answer, not one per request.
                    try channel.pipeline.syncOperations.addHandler(BackPressureHandler())
                    // A scraper or a prober that goes quiet for a minute is closed.
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: .seconds(60)))
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        AdminHandler(metrics: metrics, supervisor: supervisor, exposition: exposition))
                }
            }
            .withBoundSocket(try socket.duplicateForInstance())
            .get()
        logger.notice("admin listener serving /metrics, /healthz and /readyz", metadata: ["listen": "\(socket.address)"])
        try? await gracefulShutdown()
        try? await channel.close()
    }
}

/// One admin connection: GET or HEAD of the three paths; everything else 404 or 405.
final class AdminHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let metrics: MetricsExposition
    private let supervisor: Supervisor
    private let exposition: NIOThreadPool
    private var request: HTTPRequestHead?

    init(metrics: MetricsExposition, supervisor: Supervisor, exposition: NIOThreadPool) {
        self.metrics = metrics
        self.supervisor = supervisor
        self.exposition = exposition
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): request = head
        case .body: break  // no path takes content: it is read and dropped
        case .end:
            guard let head = request else { return }
            request = nil
            answer(head, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent { context.close(promise: nil) } else { context.fireUserInboundEventTriggered(event) }
    }

    private func answer(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
        guard head.method == .GET || head.method == .HEAD else {
            return respond(head, .methodNotAllowed, "text/plain; charset=utf-8", Array("GET or HEAD only\n".utf8),
                           extra: [("Allow", "GET, HEAD")], context: context)
        }
        switch path {
        case "/metrics":
            let metrics = self.metrics
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            exposition.runIfActive(eventLoop: context.eventLoop) { metrics.exposition() }.whenComplete { result in
                let (handler, context) = loopBound.value
                switch result {
                case .success(let body):
                    handler.respond(head, .ok, "text/plain; version=0.0.4; charset=utf-8", body, context: context)
                case .failure:
                    handler.respond(head, .serviceUnavailable, "text/plain; charset=utf-8", Array("stopping\n".utf8), context: context)
                }
            }
        case "/healthz":
            if let problem = supervisor.health.problem() {
                respond(head, .serviceUnavailable, "text/plain; charset=utf-8", Array("unhealthy: \(problem)\n".utf8), context: context)
            } else {
                respond(head, .ok, "text/plain; charset=utf-8", Array("ok\n".utf8), context: context)
            }
        case "/readyz":
            let readiness = Readiness(supervisor.latestSnapshot())
            respond(head, readiness.ready ? .ok : .serviceUnavailable, "application/json", readiness.json, context: context)
        default:
            respond(head, .notFound, "text/plain; charset=utf-8", Array("not found: /metrics, /healthz and /readyz are served here\n".utf8),
                    context: context)
        }
    }

    private func respond(_ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ type: String, _ body: [UInt8],
                         extra: [(String, String)] = [], context: ChannelHandlerContext) {
        var headers = HTTPHeaders([("Content-Type", type), ("Content-Length", "\(body.count)"), ("Cache-Control", "no-store")])
        headers.add(contentsOf: extra)
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// `/readyz`: ready when every enabled service runs (the rule of READY=1 and of `status`'s exit 0).
struct Readiness: Encodable {
    struct NotReady: Encodable {
        var service: String
        var state: String
    }

    var ready: Bool
    /// The enabled services that are not running, and their states.
    var notReady: [NotReady]

    init(_ snapshots: [ServiceSnapshot]) {
        notReady = snapshots.filter { $0.enabled && $0.state != .running }.map { NotReady(service: $0.name, state: $0.state.rawValue) }
        ready = notReady.isEmpty
    }

    var json: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(((try? encoder.encode(self)) ?? Data("{}".utf8)) + Data("\n".utf8))
    }
}
