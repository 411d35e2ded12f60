import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
@_spi(FaultInjection) @testable import Supervision

/// A line echo service: the smallest real TCP service behind the hosted-service protocol.
struct LineEchoService: HostedService {
    let name: String

    func run(_ context: InstanceContext) async throws {
        try await ServerInstance.run(context) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(EchoHandler(instance: context.number))
            }
        }
    }

    /// Replies `<instance>:<line>` to every line, and closes when asked to quiesce.
    final class EchoHandler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let instance: Int
        var pending = ByteBuffer()

        init(instance: Int) { self.instance = instance }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var input = unwrapInboundIn(data)
            pending.writeBuffer(&input)
            while let newline = pending.readableBytesView.firstIndex(of: 0x0A) {
                let line = pending.readString(length: newline - pending.readerIndex)!
                pending.moveReaderIndex(forwardBy: 1)
                context.write(wrapOutboundOut(ByteBuffer(string: "\(instance):\(line)\n")), promise: nil)
            }
            context.flush()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is ChannelShouldQuiesceEvent { context.close(promise: nil) }
        }
    }
}

/// A service whose instances do what the test scripted for their instance number.
struct ScriptedService: HostedService {
    enum Behaviour: Sendable {
        /// Report ready, then serve until stopped.
        case serve
        /// Report ready, then throw after the delay.
        case failAfter(Duration)
        /// Report ready, then return (a normal end) after the delay.
        case exitAfter(Duration)
        /// Never report ready; return when stopped.
        case neverReady
        /// Report ready, then ignore stop requests until forced.
        case ignoreGracefulStop
        /// Report ready only after the delay, then serve until stopped.
        case readyAfter(Duration)
    }

    let name: String
    let script: @Sendable (Int) -> Behaviour

    func run(_ context: InstanceContext) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer {
            context.eventLoopsWillShutDown()
            group.shutdownGracefully { _ in }
        }
        switch script(context.number) {
        case .serve:
            context.reportReady(eventLoops: [group.next()])
            try await context.untilStopped()
        case .failAfter(let delay):
            context.reportReady(eventLoops: [group.next()])
            try await Task.sleep(for: delay)
            throw InstanceFailure("scripted failure of instance \(context.number)")
        case .exitAfter(let delay):
            context.reportReady(eventLoops: [group.next()])
            try await Task.sleep(for: delay)
        case .neverReady:
            try await context.untilStopped()
        case .readyAfter(let delay):
            try await Task.sleep(for: delay)
            context.reportReady(eventLoops: [group.next()])
            try await context.untilStopped()
        case .ignoreGracefulStop:
            context.reportReady(eventLoops: [group.next()])
            let forced = NIOLockedValueBox<CheckedContinuation<Void, Never>?>(nil)
            await withCheckedContinuation { continuation in
                forced.withLockedValue { $0 = continuation }
                context.onForcedStop { forced.withLockedValue { $0?.resume(); $0 = nil } }
            }
        }
    }
}

/// Runs a supervisor for one test and waits for its events with deadlines.
final class SupervisorHarness: Sendable {
    let supervisor: Supervisor
    let sockets: [String: ListeningSocket]
    private let group: MultiThreadedEventLoopGroup
    private let runTask: Task<Result<Void, any Error>, Never>
    private let updates: NIOLockedValueBox<[SupervisorEvent]>
    private let watcher: Task<Void, Never>

    init(_ services: [(any HostedService, SupervisionSettings)], isolation: IsolationMode = .isolated,
         maxAbandoned: Int = 3, withSockets: Bool = false) throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var sockets: [String: ListeningSocket] = [:]
        if withSockets {
            for (service, _) in services {
                sockets[service.name] = try ListeningSocket.bind(name: service.name, endpoint: "127.0.0.1:0")
            }
        }
        self.sockets = sockets
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let registrations = services.map { service, settings in
            ServiceRegistration(service: service, settings: settings, sockets: sockets[service.name].map { [$0] } ?? [])
        }
        let supervisor = Supervisor(services: registrations, isolation: isolation, maxAbandoned: maxAbandoned,
                                    eventLoop: group.next(), logger: logger)
        self.supervisor = supervisor
        let updates = NIOLockedValueBox<[SupervisorEvent]>([])
        self.updates = updates
        let (_, stream) = supervisor.events.subscribe()
        watcher = Task {
            for await event in stream { updates.withLockedValue { $0.append(event) } }
        }
        runTask = Task {
            do {
                try await supervisor.run()
                return .success(())
            } catch {
                return .failure(error)
            }
        }
    }

    var events: [SupervisorEvent] { updates.withLockedValue { $0 } }

    /// Waits until an event matching `predicate` was recorded; fails after `timeout`.
    @discardableResult
    func waitFor(_ description: String, timeout: Duration = .seconds(5),
                 _ predicate: @Sendable (SupervisorEvent) -> Bool) async throws -> SupervisorEvent {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let match = events.first(where: predicate) { return match }
            try await Task.sleep(for: .milliseconds(5))
        }
        throw HarnessError("timed out after \(timeout) waiting for \(description); events: \(events.map { "\($0.service)#\($0.instance) \($0.from)->\($0.to) \($0.reason)" })")
    }

    @discardableResult
    func waitForState(_ service: String, _ state: ServiceState, instance: Int? = nil, timeout: Duration = .seconds(5)) async throws -> SupervisorEvent {
        try await waitFor("\(service) \(state) instance \(instance.map(String.init) ?? "any")", timeout: timeout) {
            $0.service == service && $0.to == state && (instance == nil || $0.instance == instance)
        }
    }

    /// Waits for `run()` to end (escalation) and returns how it ended.
    func outcome(timeout: Duration = .seconds(5)) async throws -> Result<Void, any Error> {
        let task = runTask
        return try await withThrowingTaskGroup(of: Result<Void, any Error>?.self) { group in
            group.addTask { await task.value }
            group.addTask { try await Task.sleep(for: timeout); return nil }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let result = first else { throw HarnessError("run() did not end") }
            return result
        }
    }

    /// What the tests break in a running in-process instance (the host's fault injection does the same
    /// through its own hook; the supervisor itself knows no faults).
    enum Breakage {
        case fail, hang, stall, closeListeners
    }

    func breakInstance(of name: String, _ breakage: Breakage) async throws {
        let handle = try await supervisor.runningInstance(of: name)
        guard let instance = handle as? InProcessInstance else { throw HarnessError("\(name) does not run in process") }
        let context = instance.context
        switch breakage {
        case .fail:
            context.fail(InstanceFailure("test: instance broken"))
        case .hang:
            context.withLiveEventLoops { loops in loops.forEach { $0.execute { while true { sleep(3600) } } } }
        case .stall:
            let duration = try await supervisor.settings(of: name).livenessTimeout * 3
            let (seconds, attoseconds) = duration.components
            let micro = UInt32(seconds) * 1_000_000 + UInt32(attoseconds / 1_000_000_000_000)
            context.withLiveEventLoops { loops in loops.forEach { $0.execute { usleep(micro) } } }
        case .closeListeners:
            guard context.closeListeners() else { throw HarnessError("\(name) has no listeners") }
        }
    }

    func stop() async {
        await supervisor.shutdown()
        _ = await runTask.value
        watcher.cancel()
        sockets.values.forEach { $0.close() }
        try? await group.shutdownGracefully()
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension SupervisionSettings {
    /// Fast settings for tests: short timeouts, tiny backoff.
    static func fast(_ change: (inout SupervisionSettings) -> Void = { _ in }) -> SupervisionSettings {
        var settings = SupervisionSettings()
        settings.backoffInitial = .milliseconds(10)
        settings.backoffMax = .milliseconds(40)
        settings.livenessInterval = .milliseconds(50)
        settings.livenessTimeout = .milliseconds(200)
        settings.startupTimeout = .seconds(2)
        settings.shutdownTimeout = .seconds(2)
        settings.maxRestarts = 100
        change(&settings)
        return settings
    }
}

/// A blocking line client for the echo service.
enum LineClient {
    /// Connects, sends `line`, returns the reply line (or throws on refusal / timeout).
    static func exchange(port: Int, line: String, timeout: Int = 5) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var interval = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw HarnessError("connect: \(String(cString: strerror(errno)))") }
        let data = Array("\(line)\n".utf8)
        guard write(fd, data, data.count) == data.count else { throw HarnessError("write failed") }
        var reply: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1 {
            if byte == 0x0A { return String(decoding: reply, as: UTF8.self) }
            reply.append(byte)
        }
        throw HarnessError("no reply: \(String(cString: strerror(errno)))")
    }

    static func port(of socket: ListeningSocket) -> Int {
        Int(socket.address.split(separator: ":").last!)!
    }
}
