import CProcessControl
import Foundation
import Glibc
import HostControl
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import Supervision

/// Runs each instance of a service in a worker process of its own (`isolation = process`): a trap, a
/// segfault or an abort ends that worker only, and the supervisor restarts it as it would any failure.
///
/// Contract: every worker is `inetinfo worker` started through `posix_spawn` with the service's
/// host-owned listening sockets at descriptors 4, 5, … and one end of a socketpair at 3 (its control
/// channel, ``WorkerMessage``), nothing else; every worker is reaped; a worker never outlives the host
/// (it asks the kernel for SIGKILL when the host dies, and exits at EOF on its channel). Every worker is
/// sent its configuration as soon as it is spawned and builds its service from it; the start message only
/// names the instance. With `spares > 0` one such prepared worker waits, and the next launch only sends it
/// its start message; a new spare is started once the new worker is ready.
final class WorkerRunner: InstanceRunner {
    private let executable: String
    private let service: String
    private let spares: Int
    private let group: any EventLoopGroup
    private let logger: Logger
    private let logLevel: String
    /// What a new worker prepares with: the host's configuration of the service.
    private let configuration: @Sendable (_ sockets: [ListeningSocket]) -> WorkerConfiguration
    /// Fault injection (`slow-start`): how late the next instance's ready report must come, once.
    private let readinessDelay: @Sendable () -> Duration?
    // Guards the idle spare and whether the runner was shut down, touched by the supervisor and by the
    // workers' channel loop (a ready report starts the next spare).
    private let state = NIOLockedValueBox<(spare: WorkerInstance?, closed: Bool)>((nil, false))

    init(executable: String, service: String, spares: Int, group: any EventLoopGroup, logger: Logger, logLevel: String,
         configuration: @escaping @Sendable (_ sockets: [ListeningSocket]) -> WorkerConfiguration,
         readinessDelay: @escaping @Sendable () -> Duration?) {
        self.executable = executable
        self.service = service
        self.spares = spares
        self.group = group
        self.logger = logger
        self.logLevel = logLevel
        self.configuration = configuration
        self.readinessDelay = readinessDelay
    }

    func launch(_ spec: InstanceSpec, events: @escaping @Sendable (InstanceEvent) -> Void) -> any InstanceHandle {
        let worker: WorkerInstance
        if let spare = takeSpare() {
            worker = spare
        } else {
            do {
                worker = try spawn(sockets: spec.sockets)
            } catch {
                spec.logger.error("cannot start a worker process", metadata: ["error": "\(error)"])
                return UnstartedWorker(reason: "cannot start a worker process: \(error)")
            }
        }
        // The next spare starts once this worker is ready, not now: on a small machine its start (a
        // process, a runtime) would compete for the CPU with the worker that has to take over.
        let sockets = spec.sockets
        worker.attach { [weak self] event in
            events(event)
            if event == .ready, let self, self.spares > 0 { self.startSpare(sockets: sockets) }
        }
        worker.send(.start(instance: spec.number, readinessDelayMs: readinessDelay()?.milliseconds))
        spec.logger.info("worker serving", metadata: ["pid": "\(worker.pid)"])
        return worker
    }

    func shutDown() {
        let spare = state.withLockedValue { state in
            state.closed = true
            defer { state.spare = nil }
            return state.spare
        }
        spare?.forceStop()
    }

    private func takeSpare() -> WorkerInstance? {
        state.withLockedValue { state in
            defer { state.spare = nil }
            guard let spare = state.spare, !spare.hasEnded else { return nil }
            return spare
        }
    }

    private func startSpare(sockets: [ListeningSocket]) {
        guard state.withLockedValue({ !$0.closed && $0.spare == nil }) else { return }
        do {
            let spare = try spawn(sockets: sockets)
            let kept = state.withLockedValue { state -> Bool in
                guard !state.closed, state.spare == nil else { return false }
                state.spare = spare
                return true
            }
            if !kept { spare.forceStop() }
        } catch {
            logger.warning("cannot start a spare worker", metadata: ["service": "\(service)", "error": "\(error)"])
        }
    }

    private func spawn(sockets: [ListeningSocket]) throws -> WorkerInstance {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw ChildProcess.SpawnError(operation: "socketpair", errno: errno)
        }
        let pid: pid_t
        do {
            // A worker that crashes must end at once, for its replacement to take over in milliseconds:
            // Swift's backtracer would keep it alive for seconds (unless the operator asks for it).
            pid = try ChildProcess.spawn(executable: executable, name: "inetinfo",
                                         arguments: ["worker", "--service", service, "--host-pid", "\(getpid())",
                                                     "--log-level", logLevel],
                                         descriptors: [pair[1]] + sockets.map(\.fd),
                                         environment: ["SWIFT_BACKTRACE": "enable=no"])
        } catch {
            Glibc.close(pair[0])
            Glibc.close(pair[1])
            throw error
        }
        Glibc.close(pair[1])
        let channel = group.next().makePromise(of: (any Channel).self)
        let worker = WorkerInstance(pid: pid, channel: channel.futureResult, logger: logger)
        // Everything but the instance number is known now: the worker builds its service while it waits,
        // so that a spare's start costs no more than the start itself.
        worker.send(.prepare(configuration(sockets)))
        ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(LineBasedFrameDecoder(), maximumBufferSize: WorkerMessage.maximumLineLength))
                    try channel.pipeline.syncOperations.addHandler(
                        WorkerChannelHandler(received: worker.received, closed: worker.channelClosed))
                }
            }
            .withConnectedSocket(pair[0])
            .cascade(to: channel)
        channel.futureResult.whenFailure { [logger] error in
            logger.error("cannot adopt a worker's control channel; killing it", metadata: ["pid": "\(pid)", "error": "\(error)"])
            worker.forceStop()
        }
        Task.detached {
            let end = await ChildProcess.reap(pid)
            worker.ended(end)
        }
        return worker
    }
}

/// A worker process as the supervisor drives it.
///
/// The worker is our own binary, but one that crashed half-way or was subverted must not be able to hurt
/// the host: anything outside the protocol (a second ready report, a message only the host sends, a pong
/// for no ping) ends it, and a failure's reason is cut to a few KiB.
final class WorkerInstance: InstanceHandle {
    let pid: Int32
    private let channel: EventLoopFuture<any Channel>
    private let logger: Logger

    private struct State {
        var events: (@Sendable (InstanceEvent) -> Void)?
        var pings: [Int: @Sendable () -> Void] = [:]
        var nextPing = 0
        var readyReported = false
        var failureReported = false
        /// Names the process even once it is reaped, so a kill never reaches a process that reused its
        /// pid; -1 when the kernel gave none (then signals go by pid, and only until the reap).
        var pidfd: Int32
        var end: InstanceEnd?
        var endWaiters: [CheckedContinuation<InstanceEnd, Never>] = []
    }

    // Guards the event sink, the outstanding pings, the pidfd and the end: written by the supervisor, the
    // channel's loop and the reaper.
    private let state: NIOLockedValueBox<State>

    init(pid: Int32, channel: EventLoopFuture<any Channel>, logger: Logger) {
        self.pid = pid
        self.channel = channel
        self.logger = logger
        state = NIOLockedValueBox(State(pidfd: inetinfo_pidfd_open(pid)))
    }

    var forcedStopIsCertain: Bool { true }

    var hasEnded: Bool { state.withLockedValue { $0.end != nil } }

    func attach(events: @escaping @Sendable (InstanceEvent) -> Void) {
        state.withLockedValue { $0.events = events }
    }

    func send(_ message: WorkerMessage) {
        let line = message.encodedLine()
        channel.whenSuccess { channel in
            channel.writeAndFlush(ByteBuffer(bytes: line), promise: nil)
        }
    }

    func ping(answered: @escaping @Sendable () -> Void) {
        let id = state.withLockedValue { state -> Int in
            state.nextPing += 1
            state.pings[state.nextPing] = answered
            return state.nextPing
        }
        send(.ping(id))
    }

    func requestStop() { send(.stop) }

    /// SIGKILL: whatever the worker is doing, it ends; nothing is ever abandoned in this mode.
    func forceStop() {
        state.withLockedValue { state in
            guard state.end == nil else { return }
            if state.pidfd >= 0 {
                _ = inetinfo_pidfd_send_signal(state.pidfd, SIGKILL)
            } else {
                // Not reaped yet (the reaper marks the end under this lock only after `waitpid`, so the pid
                // may be reaped but not yet marked: without a pidfd this is the best there is).
                kill(pid, SIGKILL)
            }
        }
    }

    /// Fault injection, applied inside the worker; `livenessTimeout` is the service's now (for `stall`).
    func inject(_ fault: Fault, livenessTimeout: Duration) {
        send(.fault(fault, livenessTimeoutMs: livenessTimeout.milliseconds))
    }

    func ended() async -> InstanceEnd {
        await withCheckedContinuation { continuation in
            let end = state.withLockedValue { state -> InstanceEnd? in
                if state.end == nil { state.endWaiters.append(continuation) }
                return state.end
            }
            if let end { continuation.resume(returning: end) }
        }
    }

    // MARK: from the channel and the reaper

    /// Longest failure reason kept from a worker.
    private static let maximumReasonLength = 4096

    func received(_ message: WorkerMessage) {
        switch message {
        case .ready:
            let events = state.withLockedValue { state -> (@Sendable (InstanceEvent) -> Void)?? in
                guard !state.readyReported else { return .none }
                state.readyReported = true
                return .some(state.events)
            }
            guard let events else { return violation("a second ready report") }
            events?(.ready)
        case .failed(let reason):
            let events = state.withLockedValue { state -> (@Sendable (InstanceEvent) -> Void)?? in
                guard !state.failureReported else { return .none }
                state.failureReported = true
                return .some(state.events)
            }
            guard let events else { return violation("a second failure report") }
            events?(.failed(reason: String(reason.prefix(Self.maximumReasonLength))))
        case .pong(let id):
            guard let answered = state.withLockedValue({ $0.pings.removeValue(forKey: id) }) else {
                return violation("an answer to no ping")
            }
            answered()
        case .prepare, .start, .ping, .stop, .fault:
            violation("a message only the host sends")
        }
    }

    /// The channel closed: the worker exited, or one of the ends gave up on the other. A worker that
    /// no longer hears the host must not go on serving.
    func channelClosed() {
        forceStop()
    }

    private func violation(_ what: String) {
        logger.error("worker broke the control protocol; killing it", metadata: ["pid": "\(pid)", "violation": "\(what)"])
        let events = state.withLockedValue { state -> (@Sendable (InstanceEvent) -> Void)? in
            guard !state.failureReported else { return nil }
            state.failureReported = true
            return state.events
        }
        events?(.failed(reason: "worker broke the control protocol: \(what)"))
        forceStop()
    }

    func ended(_ end: InstanceEnd) {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<InstanceEnd, Never>] in
            state.end = end
            state.pings = [:]
            if state.pidfd >= 0 {
                Glibc.close(state.pidfd)
                state.pidfd = -1
            }
            defer { state.endWaiters = [] }
            return state.endWaiters
        }
        waiters.forEach { $0.resume(returning: end) }
        channel.whenSuccess { $0.close(promise: nil) }
    }
}

/// A worker that could not be started: it has already ended, with the reason.
struct UnstartedWorker: InstanceHandle {
    let reason: String
    var pid: Int32 { 0 }
    var forcedStopIsCertain: Bool { true }
    func ping(answered: @escaping @Sendable () -> Void) { answered() }
    func requestStop() {}
    func forceStop() {}
    func ended() async -> InstanceEnd { .threw(reason: reason) }
}
