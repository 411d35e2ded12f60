import NIOCore

/// Closes a connection whose output makes no progress for the send timeout (`smtp.send-timeout`,
/// `http.send-timeout`): a client that stopped reading must not hold its connection, its buffered
/// replies and an open file forever.
///
/// It watches only while the channel is not writable (more than the high-water mark, 64 KiB by NIO's
/// default, waits to be written). Then it checks, once a second, how many bytes still wait: any decrease
/// is progress, so a slow reader of a large file is never cut off; no decrease for the whole timeout
/// closes the connection. While the channel is writable nothing is watched and nothing is scheduled.
public final class SendTimeoutHandler: ChannelInboundHandler {
    public typealias InboundIn = ByteBuffer

    private let timeout: TimeAmount
    private let checkInterval: TimeAmount
    private enum State {
        case writable
        /// Not writable since; `waiting` bytes were buffered at the last check, fewer than at any check
        /// before `progress`.
        case stalled(waiting: Int, progress: NIODeadline, check: Scheduled<Void>)
    }
    private var state = State.writable

    public init(timeout: TimeAmount) {
        self.timeout = timeout
        checkInterval = min(timeout, .seconds(1))
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            stopWatching()
        } else if case .writable = state {
            state = .stalled(waiting: Self.buffered(context), progress: .now(), check: schedule(context))
        }
        context.fireChannelWritabilityChanged()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        stopWatching()
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        stopWatching()
    }

    private func stopWatching() {
        if case .stalled(_, _, let check) = state { check.cancel() }
        state = .writable
    }

    private func schedule(_ context: ChannelHandlerContext) -> Scheduled<Void> {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        return context.eventLoop.scheduleTask(in: checkInterval) {
            let (handler, context) = bound.value
            handler.check(context)
        }
    }

    private func check(_ context: ChannelHandlerContext) {
        guard case .stalled(let waiting, var progress, _) = state else { return }
        let now = NIODeadline.now()
        let current = Self.buffered(context)
        if current < waiting { progress = now }
        if now - progress >= timeout {
            state = .writable
            context.close(promise: nil)
            return
        }
        state = .stalled(waiting: min(current, waiting), progress: progress, check: schedule(context))
    }

    private static func buffered(_ context: ChannelHandlerContext) -> Int {
        (try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
    }
}
