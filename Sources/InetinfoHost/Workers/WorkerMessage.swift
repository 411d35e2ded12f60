import Foundation
import HostControl
import NIOCore

/// The messages of a worker's control channel (one end of a socketpair, descriptor 3 in the worker):
/// one JSON object per line, in both directions.
enum WorkerMessage: Codable, Sendable, Equatable {
    // host → worker
    /// Sent once, right after the spawn: build the service and adopt the sockets, but do not serve yet.
    case prepare(WorkerConfiguration)
    /// Serve, as instance `instance` (a spare waits for this). `readinessDelayMs`: fault injection
    /// (`slow-start`), the ready report goes out this late.
    case start(instance: Int, readinessDelayMs: Int64?)
    /// Answer with ``pong(_:)`` once every event loop of the instance has run a no-op.
    case ping(Int)
    /// Stop gracefully (finish the connections), then exit 0.
    case stop
    /// `livenessTimeoutMs`: the service's liveness timeout now (a `stall` lasts three of them).
    case fault(Fault, livenessTimeoutMs: Int64)
    /// Refuse connections from these addresses from now on (the host's quarantine changed).
    case quarantine([String])

    // worker → host
    case ready
    case failed(String)
    case pong(Int)

    /// A line longer than this ends the channel (and so the worker): no end of the channel buffers without
    /// bound whatever the other sends. A start message, the longest, is a few KiB.
    static let maximumLineLength = 1 << 20

    func encodedLine() -> Data {
        // Encoding a value of this type cannot fail (no floats that could be non-finite, no custom encoders).
        var data = (try? JSONEncoder().encode(self)) ?? Data()
        data.append(0x0A)
        return data
    }

    static func decode(line: some Collection<UInt8>) -> WorkerMessage? {
        try? JSONDecoder().decode(WorkerMessage.self, from: Data(line))
    }
}

/// What a worker needs to build its service: the host's configuration of it (as read at the host's start:
/// service options change with a restart of the host, as in the other modes).
struct WorkerConfiguration: Codable, Sendable, Equatable {
    struct Socket: Codable, Sendable, Equatable {
        var name: String
        var address: String
    }

    struct Peer: Codable, Sendable, Equatable {
        var name: String
        var enabled: Bool
        var listen: [String]
    }

    var service: String
    var options: [String: String]
    var stateDirectory: String
    var threads: Int
    var hostName: String
    var services: [Peer]
    /// The sockets at descriptors 4, 5, … in this order.
    var sockets: [Socket]
    /// Where the worker keeps its instance's flight recorder; `nil`: none.
    var flightRecorderDirectory: String?
    /// The addresses refused at connect when the worker is prepared (later changes come as messages).
    var quarantine: [String] = []
    /// Where the instance counts what it does, for the host's `/metrics` (``FigureFile``); `nil`: the host
    /// keeps no metrics, and the instance counts nothing.
    var figuresFile: String?
}

/// Where things are in a worker process.
enum WorkerDescriptors {
    static let control: Int32 = 3
    static let firstSocket: Int32 = 4
}

/// Either end of a worker's control channel: decodes lines (after a `LineBasedFrameDecoder`) into messages.
/// A line that is not a message is ignored; the channel's end is reported once.
final class WorkerChannelHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let received: @Sendable (WorkerMessage) -> Void
    private let closed: @Sendable () -> Void

    init(received: @escaping @Sendable (WorkerMessage) -> Void, closed: @escaping @Sendable () -> Void = {}) {
        self.received = received
        self.closed = closed
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = unwrapInboundIn(data)
        if let message = WorkerMessage.decode(line: line.readableBytesView) { received(message) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

/// Entry points for the worker-message fuzzer (Fuzz/worker-message-fuzzer); not API.
@_spi(Fuzzing) public enum WorkerMessageFuzzing {
    public static let maximumLineLength = WorkerMessage.maximumLineLength

    /// Whether `line` is a message of the protocol.
    public static func decodes(line: some Collection<UInt8>) -> Bool {
        WorkerMessage.decode(line: line) != nil
    }

    /// Decodes one framed line as either end of a worker's channel does. A line that decodes must encode
    /// to exactly one line that decodes to the same message.
    public static func check(line: some Collection<UInt8>) {
        guard let message = WorkerMessage.decode(line: line) else { return }
        let encoded = message.encodedLine()
        precondition(encoded.last == 0x0A && !encoded.dropLast().contains(0x0A), "an encoded message is not one line")
        precondition(WorkerMessage.decode(line: encoded.dropLast()) == message, "a message does not survive encoding: \(message)")
    }
}
