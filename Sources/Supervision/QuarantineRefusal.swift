import NIOCore

/// How a connection from a quarantined peer ends: the service's refusal (SMTP `554 5.7.1`, HTTP `403`),
/// then the close. No byte of its input reaches the service: nothing of the service's pipeline is
/// installed, and reading stays off (NIO still drains the socket if the peer half-closes; that input
/// goes nowhere).
enum QuarantineRefusal {
    /// How long the output side stays half-closed before the socket is closed: closing a socket with
    /// unread input resets the connection, and a reset that arrives before the peer read the refusal
    /// makes it lose the refusal.
    static let lingering = TimeAmount.seconds(1)

    static func refuse(_ channel: any Channel, with refusal: String) -> EventLoopFuture<Void> {
        do {
            try channel.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
        } catch {
            channel.close(promise: nil)
            return channel.eventLoop.makeSucceededVoidFuture()
        }
        channel.writeAndFlush(ByteBuffer(string: refusal)).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
            channel.eventLoop.scheduleTask(in: lingering) { channel.close(promise: nil) }
        }
        return channel.eventLoop.makeSucceededVoidFuture()
    }
}
