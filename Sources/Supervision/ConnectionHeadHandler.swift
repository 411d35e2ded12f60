import NIOCore

/// The first handler of every connection of a ``ServerInstance``: what every service gets without writing
/// it. One handler, not one per concern: on the hot path every hop through the pipeline costs (measured,
/// docs/benchmarks.md, "Flight recorder").
///
/// - Flight recording (with a ``FlightRecorder``): what the peer sends is copied into the connection's
///   slot, what goes back is counted, and the slot is marked as processing while the rest of the pipeline
///   handles a read, so that a crash of this thread in that handling names this connection.
/// - Send timeout (`smtp.send-timeout`, `http.send-timeout`): a connection whose output makes no progress
///   for the timeout is closed — a client that stopped reading must not hold its connection, its buffered
///   replies and an open file forever. It watches only while the channel is not writable (more than the
///   high-water mark, 64 KiB by NIO's default, waits to be written), checking once a second how many bytes
///   still wait: any decrease is progress, so a slow reader of a large file is never cut off. While the
///   channel is writable nothing is watched and nothing is scheduled.
final class ConnectionHeadHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let recorder: FlightRecorder?
    private var slot: FlightRecorder.Slot?

    private let sendTimeout: TimeAmount?
    private let checkInterval: TimeAmount
    private enum Sending {
        case writable
        /// Not writable since; `waiting` bytes were buffered at the last check, fewer than at any check
        /// before `progress`.
        case stalled(waiting: Int, progress: NIODeadline, check: Scheduled<Void>)
    }
    private var sending = Sending.writable

    init(recorder: FlightRecorder?, sendTimeout: TimeAmount?) {
        self.recorder = recorder
        self.sendTimeout = sendTimeout
        checkInterval = min(sendTimeout ?? .seconds(1), .seconds(1))
    }

    // MARK: flight recording

    func handlerAdded(context: ChannelHandlerContext) {
        slot = recorder?.claim(peer: context.channel.remoteAddress.map(Self.describe) ?? "unknown")
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        slot?.release()
        slot = nil
        stopWatching()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let slot else { return context.fireChannelRead(data) }
        unwrapInboundIn(data).withUnsafeReadableBytes { slot.recordInput($0) }
        slot.setProcessing(true)
        context.fireChannelRead(data)
        slot.setProcessing(false)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if let slot {
            switch unwrapOutboundIn(data) {
            case .byteBuffer(let buffer): slot.recordOutput(byteCount: buffer.readableBytes)
            case .fileRegion(let region): slot.recordOutput(byteCount: region.readableBytes)
            }
        }
        context.write(data, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        slot?.release()
        slot = nil
        stopWatching()
        context.fireChannelInactive()
    }

    /// `ADDR:PORT`, `[ADDR]:PORT` for IPv6: the form the crash records and the quarantine show.
    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress else { return "\(address)" }
        let port = address.port.map { ":\($0)" } ?? ""
        if case .v6 = address { return "[\(ip)]\(port)" }
        return "\(ip)\(port)"
    }

    // MARK: send timeout

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            stopWatching()
        } else if sendTimeout != nil, case .writable = sending {
            sending = .stalled(waiting: Self.buffered(context), progress: .now(), check: schedule(context))
        }
        context.fireChannelWritabilityChanged()
    }

    private func stopWatching() {
        if case .stalled(_, _, let check) = sending { check.cancel() }
        sending = .writable
    }

    private func schedule(_ context: ChannelHandlerContext) -> Scheduled<Void> {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        return context.eventLoop.scheduleTask(in: checkInterval) {
            let (handler, context) = bound.value
            handler.check(context)
        }
    }

    private func check(_ context: ChannelHandlerContext) {
        guard let sendTimeout, case .stalled(let waiting, var progress, _) = sending else { return }
        let now = NIODeadline.now()
        let current = Self.buffered(context)
        if current < waiting { progress = now }
        if now - progress >= sendTimeout {
            sending = .writable
            context.close(promise: nil)
            return
        }
        sending = .stalled(waiting: min(current, waiting), progress: progress, check: schedule(context))
    }

    private static func buffered(_ context: ChannelHandlerContext) -> Int {
        (try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
    }
}
