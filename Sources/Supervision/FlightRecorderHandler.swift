import NIOCore

/// The first handler of every connection of an instance that has a ``FlightRecorder``: copies what the
/// peer sends into the connection's slot, counts what goes back, and marks the slot as processing while
/// the rest of the pipeline handles a read, so that a crash in that handling names this connection.
final class FlightRecorderHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    private let recorder: FlightRecorder
    private var slot: FlightRecorder.Slot?

    init(recorder: FlightRecorder) {
        self.recorder = recorder
    }

    func handlerAdded(context: ChannelHandlerContext) {
        slot = recorder.claim(peer: context.channel.remoteAddress.map(Self.describe) ?? "unknown")
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        slot?.release()
        slot = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let slot else { return context.fireChannelRead(data) }
        let buffer = unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { slot.recordInput($0) }
        slot.setProcessing(true)
        context.fireChannelRead(data)
        slot.setProcessing(false)
    }

    func channelInactive(context: ChannelHandlerContext) {
        slot?.release()
        slot = nil
        context.fireChannelInactive()
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

    /// `ADDR:PORT`, `[ADDR]:PORT` for IPv6: the form the crash records and the quarantine show.
    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress else { return "\(address)" }
        let port = address.port.map { ":\($0)" } ?? ""
        if case .v6 = address { return "[\(ip)]\(port)" }
        return "\(ip)\(port)"
    }
}
