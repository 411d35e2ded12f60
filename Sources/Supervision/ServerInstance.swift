import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Runs one instance of a SwiftNIO server on the instance's sockets: the lifecycle every TCP service
/// shares, so that protocol code only supplies its channel pipeline.
///
/// The instance gets its own event loop group, so that a hung instance blocks only its own threads and
/// can be abandoned while its replacement serves; with a ``SpareLoopGroup`` (in-process instances), one
/// started ahead of need, or the loops of an instance that ended cleanly. On a graceful stop it closes its
/// listeners, sends `ChannelShouldQuiesceEvent` to every connection (finish the current exchange, then
/// close) and waits for them; a forced stop closes every connection at once. A failed instance closes its listeners at once
/// and its successor listens only once they are closed (``ListenerHandover``): a connection made after the
/// successor reports ready is never accepted, and cut, by the failed instance.
///
/// Every connection gets a ``ConnectionHeadHandler`` first: its flight recording when the instance has a
/// recorder, and the send timeout when `sendTimeout` is set (a peer that stops reading is cut off the same
/// way in every service). A peer in the instance's quarantine gets `refusal` and is closed, its input unread.
public enum ServerInstance {
    public static func run(
        _ context: InstanceContext,
        threads: Int = 1,
        sendTimeout: TimeAmount? = nil,
        refusal: String? = nil,
        childChannelInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws {
        let group: MultiThreadedEventLoopGroup
        do {
            group = try context.spareLoops?.take(threads: threads) ?? SpareLoopGroup.start(threads: threads)
        } catch {
            throw InstanceFailure("\(error)")
        }
        // The first instance of a service starts its successor's loops before it reports ready: then the
        // host holds as many threads and descriptors from its start on as after any number of restarts.
        if context.number == 1 { context.spareLoops?.prepare(threads: threads) }
        let connections = ConnectionSet()
        let loopsRunning = NIOLockedValueBox(true)
        // Made on the loop, where the listener is bound: a bootstrap is not `Sendable`.
        let bootstrap: @Sendable () -> ServerBootstrap = {
            Self.bootstrap(group: group, context, connections: connections, sendTimeout: sendTimeout, refusal: refusal,
                           childChannelInitializer: childChannelInitializer)
        }

        // The start-up runs on the instance's loop from end to end, from the predecessor's last listener
        // closing to the ready report: every hop through the cooperative pool on the way was a thread to
        // wake on the restart's path.
        let loop = group.next()
        let handedOver = EventLoopFuture.whenAllSucceed(
            context.sockets.map { $0.handover.retiringListenersClosed(within: .milliseconds(100), on: loop) }, on: loop)
        let started = handedOver.flatMap { closed -> EventLoopFuture<[any Channel]> in
            // Listen only once a failed predecessor no longer does: then a connection made after this
            // instance reports ready reaches it, and is never cut by the failed one (and two instances
            // never race for an accept, which NIO's debug builds assert against).
            for (socket, closed) in zip(context.sockets, closed) where !closed {
                context.logger.warning("a failed instance still listens: it may accept and cut connections until its listener closes",
                                       metadata: ["socket": "\(socket.address)"])
            }
            let binds = context.sockets.map { socket in
                loop.makeCompletedFuture { try socket.duplicateForInstance() }.flatMap { bootstrap().withBoundSocket($0) }
            }
            return EventLoopFuture.whenAllComplete(binds, on: loop).flatMapThrowing { results in
                let listeners = results.compactMap { try? $0.get() }
                for case .failure(let error) in results {
                    listeners.forEach { $0.close(promise: nil) }
                    throw error
                }
                return listeners
            }
        }.map { listeners in
            Self.serve(context, listeners: listeners, connections: connections, loopsRunning: loopsRunning)
            context.reportReady(eventLoops: Array(group.makeIterator()))
            return listeners
        }
        let listeners: [any Channel]
        do {
            listeners = try await started.get()
        } catch {
            // The loops ran the start-up: they serve the next attempt.
            await Self.letGo(of: group, threads: threads, context)
            throw InstanceFailure("cannot serve \(context.sockets.map(\.address).joined(separator: ", ")): \(error)")
        }
        // One spare for the successor: once the predecessor has ended (it offers its loops) or hung, and
        // not beside this instance's first requests; by a successor if this instance does not serve that
        // long. A timer of the loop, cancelled at the end: an instance that fails at once leaves nothing
        // behind to wake up later.
        let settling = context.spareLoops.map { spareLoops in
            loop.scheduleTask(in: .milliseconds(100)) {
                guard !context.hasFailed, !context.isStopRequested else { return }
                // Starting threads blocks: not on the loop.
                Task.detached { spareLoops.settle(threads: threads) }
            }
        }

        var failure: (any Error)?
        do {
            try await context.untilStopped()
        } catch {
            failure = error
        }
        settling?.cancel()
        for listener in listeners { try? await listener.close() }
        if failure == nil {
            connections.quiesceAll()
        } else {
            connections.closeAll()
        }
        await connections.waitUntilEmpty()
        loopsRunning.withLockedValue { $0 = false }
        await Self.letGo(of: group, threads: threads, context)
        if let failure { throw failure }
    }

    /// How every listener of the instance accepts, and what every connection gets first.
    private static func bootstrap(
        group: MultiThreadedEventLoopGroup, _ context: InstanceContext, connections: ConnectionSet,
        sendTimeout: TimeAmount?, refusal: String?,
        childChannelInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptGate(context: context))
                }
            }
            // The default accepts only 4 connections per loop tick; bursts (and the backlog
            // that piles up during a restart) then wait for seconds.
            .serverChannelOption(ChannelOptions.maxMessagesPerRead, value: 256)
            .childChannelOption(ChannelOptions.socketOption(.so_keepalive), value: 1)
            // One read (up to 64 KiB) per connection per turn of the loop, not NIO's default
            // four: a client that pipelines thousands of requests in one burst then gets its
            // turn like every other connection, and the liveness ping is not kept waiting.
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 1)
            .childChannelInitializer { channel in
                connections.insert(channel)
                if let quarantine = context.quarantine, let peer = channel.remoteAddress?.ipAddress,
                   quarantine.refuses(peer) {
                    return QuarantineRefusal.refuse(channel, with: refusal ?? "")
                }
                if context.flightRecorder != nil || sendTimeout != nil {
                    do {
                        try channel.pipeline.syncOperations.addHandler(
                            ConnectionHeadHandler(recorder: context.flightRecorder, sendTimeout: sendTimeout))
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                return childChannelInitializer(channel)
            }
    }

    /// Offers the instance's loops to its successors, or shuts them down when the service keeps no
    /// spares. First no fault injection or liveness ping can reach them any more; then each runs a task
    /// queued behind whatever was: a loop that something queued before blocks is never offered. The
    /// offer is made from the loops, not awaited: the instance ends once its connections are closed, as
    /// it always did, and a stray blocked loop is left behind as an abandoned instance's would be.
    private static func letGo(of group: MultiThreadedEventLoopGroup, threads: Int, _ context: InstanceContext) async {
        context.eventLoopsWillShutDown()
        guard let spareLoops = context.spareLoops else {
            try? await group.shutdownGracefully()
            return
        }
        EventLoopFuture.andAllComplete(group.makeIterator().map { $0.submit {} }, on: group.next()).whenComplete { _ in
            spareLoops.keep(group, threads: threads)
        }
    }

    /// Ties the instance's listeners to its context: a forced stop closes them and every connection, a
    /// failure closes them at once (and hands the sockets over), and a listener that closes by itself
    /// fails the instance.
    private static func serve(_ context: InstanceContext, listeners: [any Channel], connections: ConnectionSet,
                              loopsRunning: NIOLockedValueBox<Bool>) {
        // `loopsRunning` guards against closing channels once the loops are let go of: the supervisor may
        // force a stop of an instance that already ended on its own, and scheduling on a dead loop is an
        // error (on loops handed on to the next instance, a mistake).
        context.onForcedStop {
            loopsRunning.withLockedValue { running in
                guard running else { return }
                listeners.forEach { $0.close(promise: nil) }
                connections.closeAll()
            }
        }
        // Known to the hand-over before the failure hook can mark them retiring.
        for (listener, socket) in zip(listeners, context.sockets) { socket.handover.opened(ObjectIdentifier(listener)) }
        // Not `context`: the context keeps this closure, and a closure that kept the context would keep
        // every ended instance (its listeners, their loops and buffers) alive.
        let sockets = context.sockets
        context.onCloseListeners {
            loopsRunning.withLockedValue { running in
                guard running else { return }
                for (listener, socket) in zip(listeners, sockets) {
                    socket.handover.retiring(ObjectIdentifier(listener))
                    listener.close(promise: nil)
                }
            }
        }
        for (listener, socket) in zip(listeners, context.sockets) {
            listener.closeFuture.whenComplete { _ in
                socket.handover.closed(ObjectIdentifier(listener))
                if !context.isStopRequested {
                    context.fail(InstanceFailure("listener on \(socket.address) closed"))
                }
            }
        }
    }
}

/// Ends a listener's batch of accepts as soon as its instance has failed.
///
/// ``InstanceContext/fail(_:)`` closes the listeners at once, but that close is a task on the listener's
/// loop, and the loop runs it only after its current batch of up to `maxMessagesPerRead` accepts: while
/// clients keep connecting, the failed instance would go on accepting (and cutting) connections that its
/// successor, already serving on the same socket, should get. The gate closes the listener from inside
/// the batch, so the connection just accepted is the last one the failed instance takes.
private final class AcceptGate: ChannelInboundHandler {
    typealias InboundIn = any Channel
    /// Weak: the context keeps the listener (through its close hook), the listener keeps this handler.
    private weak var instance: InstanceContext?

    init(context: InstanceContext) { instance = context }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if instance?.hasFailed ?? true { context.close(promise: nil) }
        context.fireChannelRead(data)
    }
}

/// The open connections of one instance.
///
/// Once the instance begins to stop, a connection that registers late (accepted just before the listener
/// closed, its pipeline set up just after) is quiesced or closed as soon as it arrives, so that the
/// instance never waits for a connection nobody told to finish.
final class ConnectionSet: Sendable {
    enum Phase { case serving, quiescing, closing }

    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var emptyWaiters: [CheckedContinuation<Void, Never>] = []
        var phase = Phase.serving
    }

    // Guards the channel table, the phase and the waiters for the table to empty; touched from every event loop.
    private let state = NIOLockedValueBox(State())

    func insert(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        let phase = state.withLockedValue { state -> Phase in
            state.channels[id] = channel
            return state.phase
        }
        channel.closeFuture.whenComplete { [self] _ in
            let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
                state.channels.removeValue(forKey: id)
                guard state.channels.isEmpty else { return [] }
                defer { state.emptyWaiters.removeAll() }
                return state.emptyWaiters
            }
            waiters.forEach { $0.resume() }
        }
        switch phase {
        case .serving: break
        case .quiescing: channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        case .closing: channel.close(promise: nil)
        }
    }

    func quiesceAll() {
        let channels = state.withLockedValue { state -> [any Channel] in
            if state.phase == .serving { state.phase = .quiescing }
            return Array(state.channels.values)
        }
        for channel in channels {
            channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
    }

    func closeAll() {
        let channels = state.withLockedValue { state -> [any Channel] in
            state.phase = .closing
            return Array(state.channels.values)
        }
        for channel in channels { channel.close(promise: nil) }
    }

    func waitUntilEmpty() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let empty = state.withLockedValue { state -> Bool in
                if state.channels.isEmpty { return true }
                state.emptyWaiters.append(continuation)
                return false
            }
            if empty { continuation.resume() }
        }
    }
}
