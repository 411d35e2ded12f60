import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix

/// What the control server asks of the host.
public protocol ControlHandler: Sendable {
    /// Answers one request (every command but `events`).
    func handle(_ request: ControlRequest) async -> ControlReply
    /// The events so far and, when `follow` is set, every later one; the stream ends when the host stops.
    func events(follow: Bool) -> AsyncStream<EventRecord>
}

/// The host's control socket: a Unix stream socket, mode 0600, that speaks one JSON object per line.
///
/// Only root and the host's own user may talk to it: the peer's credentials (SO_PEERCRED) are checked
/// on every connection, so a socket made reachable by a permissive directory is still refused.
public final class ControlServer: Sendable {
    public let path: String
    private let channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let logger: Logger

    private init(path: String, channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>, logger: Logger) {
        self.path = path
        self.channel = channel
        self.logger = logger
    }

    /// Binds the socket. A socket file left by a host that is gone is replaced; one a live host still
    /// answers on is an error, so two hosts never share a control socket.
    public static func bind(path: String, group: any EventLoopGroup, logger: Logger) async throws -> ControlServer {
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o755])
        }
        var existing = stat()
        if lstat(path, &existing) == 0 {
            // Only a socket is ever replaced: a file that an operator's typo points at is not removed.
            guard existing.st_mode & S_IFMT == S_IFSOCK else { throw ControlError.notASocket(path) }
            if ControlClient(path: path, timeout: 1).isHostListening() {
                throw ControlError.socketInUse(path)
            }
            unlink(path)
        }
        let channel = try await ServerBootstrap(group: group)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: false) { channel in
                channel.eventLoop.makeCompletedFuture {
                    // A request is a short line; one without end must not grow a buffer until the host
                    // runs out of memory (or past ByteBuffer's 4 GiB, which traps).
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder(),
                                                                                       maximumBufferSize: Self.maxRequestLine))
                    try channel.pipeline.syncOperations.addHandler(FirstLineDeadline(limit: Self.firstLineTimeout))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        // The credential check below is the real guard; the mode keeps other users from connecting at all.
        guard chmod(path, 0o600) == 0 else {
            let code = errno
            try? await channel.channel.close()
            throw ControlError.cannotSecure(path, errno: code)
        }
        return ControlServer(path: path, channel: channel, logger: logger)
    }

    /// The longest request line; a longer one ends its connection.
    static let maxRequestLine = 1 << 20
    /// Control connections served at once; past it a connection gets an error reply and is closed, so that
    /// idle control connections cannot take the descriptors the services need.
    static let maxConnections = 64
    /// A connection that has sent no request line this long after connecting is closed: clients that say
    /// nothing do not keep the slots (`inetinfoctl` sends its request at once; a follow stream, once it
    /// has asked, may stay as long as it likes).
    static let firstLineTimeout = TimeAmount.seconds(10)

    /// Serves connections until the task is cancelled or the server closed.
    public func run(handler: any ControlHandler) async throws {
        let allowed: Set<UInt32> = [0, getuid()]
        // Guards the number of connections being served; taken by the accept loop and each connection's task.
        let open = NIOLockedValueBox(0)
        try await withThrowingDiscardingTaskGroup { group in
            try await channel.executeThenClose { inbound in
                for try await connection in inbound {
                    let admitted = open.withLockedValue { count -> Bool in
                        guard count < Self.maxConnections else { return false }
                        count += 1
                        return true
                    }
                    group.addTask {
                        guard admitted else { return await self.refuse(connection) }
                        defer { open.withLockedValue { $0 -= 1 } }
                        await self.serve(connection, handler: handler, allowed: allowed)
                    }
                }
            }
        }
    }

    private func refuse(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        logger.warning("control connection refused: too many", metadata: ["limit": "\(Self.maxConnections)"])
        try? await connection.executeThenClose { _, outbound in
            var data = try ControlJSON.encoder().encode(ControlReply.failure("too many control connections (\(Self.maxConnections)); try again later"))
            data.append(0x0A)
            try await outbound.write(ByteBuffer(bytes: data))
        }
    }

    /// Stops accepting connections and removes the socket file.
    public func close() async {
        try? await channel.channel.close()
        unlink(path)
    }

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, handler: any ControlHandler,
                       allowed: Set<UInt32>) async {
        let encoder = ControlJSON.encoder()
        let decoder = ControlJSON.decoder()
        do {
            try await connection.executeThenClose { inbound, outbound in
                func send(_ reply: ControlReply) async throws {
                    var data = try encoder.encode(reply)
                    data.append(0x0A)
                    try await outbound.write(ByteBuffer(bytes: data))
                }
                let credentials = try await Self.peerCredentials(of: connection.channel)
                guard allowed.contains(credentials.uid) else {
                    logger.warning("control connection refused", metadata: ["uid": "\(credentials.uid)", "pid": "\(credentials.pid)"])
                    try await send(.failure("permission denied: uid \(credentials.uid) may not control this host (allowed: root and uid \(getuid()))"))
                    return
                }
                for try await line in inbound {
                    let request: ControlRequest
                    do {
                        request = try decoder.decode(ControlRequest.self, from: Data(line.readableBytesView))
                    } catch {
                        try await send(.failure("malformed request: \(error)"))
                        continue
                    }
                    if request.command == .events {
                        for await event in handler.events(follow: request.follow ?? false) {
                            try await send(ControlReply(ok: true, event: event))
                        }
                        return
                    }
                    try await send(await handler.handle(request))
                }
            }
        } catch {
            logger.debug("control connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// The layout of Linux's `struct ucred` (which Glibc hides behind _GNU_SOURCE).
    struct PeerCredentials: Sendable {
        var pid: Int32
        var uid: UInt32
        var gid: UInt32
    }

    private static func peerCredentials(of channel: any Channel) async throws -> PeerCredentials {
        guard let provider = channel as? any SocketOptionProvider else { throw ControlError.noCredentials }
        return try await provider.unsafeGetSocketOption(level: SocketOptionLevel(SOL_SOCKET),
                                                        name: SocketOptionName(SO_PEERCRED)).get()
    }
}

public enum ControlError: Error, CustomStringConvertible, Sendable {
    case socketInUse(String)
    /// The control socket's path names something that is not a socket (never removed).
    case notASocket(String)
    case cannotSecure(String, errno: Int32)
    case noCredentials

    public var description: String {
        switch self {
        case .socketInUse(let path):
            return "another inetinfo host is already listening on \(path)"
        case .notASocket(let path):
            return "\(path) exists and is not a socket: not replaced (choose another --control-socket, or remove it)"
        case .cannotSecure(let path, let code):
            return "cannot restrict \(path) to mode 0600: \(String(cString: strerror(code)))"
        case .noCredentials:
            return "cannot read the peer credentials of a control connection"
        }
    }
}

/// Closes a control connection that has not sent a complete request line within `limit` of connecting.
private final class FirstLineDeadline: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let limit: TimeAmount
    private var deadline: Scheduled<Void>?
    private var answered = false

    init(limit: TimeAmount) { self.limit = limit }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        answered = true
        deadline?.cancel()
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        context.fireChannelInactive()
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard deadline == nil, !answered else { return }
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: limit) { channel.close(promise: nil) }
    }
}
