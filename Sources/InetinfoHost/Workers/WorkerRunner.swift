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
import Systemd

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
/// When the host keeps metrics, every worker counts into a figure file of its own (``WorkerFigures``),
/// created before its prepare message names it and read one last time after the reap.
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
    /// `SWIFT_BACKTRACE` in the workers.
    private let backtrace: String
    /// The host logs to the journal: so do its workers, directly (their standard error is the host's pipe).
    private let logsToJournal = JournaldLogHandler.isStandardErrorJournal
    /// Where the workers' figures are collected (the host keeps metrics); `nil`: workers count nothing.
    private let figures: WorkerFigures?

    private struct State {
        var spare: WorkerInstance?
        var closed = false
        /// Every worker not yet reaped (the spare and the instances), to tell them of a new quarantine.
        var live: [Int32: WorkerInstance] = [:]
        var quarantine: Set<String> = []
    }

    // Guards the idle spare, the live workers, the quarantine and whether the runner was shut down,
    // touched by the supervisor, the workers' channel loop (a ready report starts the next spare), the
    // reapers and the quarantine.
    private let state = NIOLockedValueBox(State())

    /// The Swift runtime's crash handler in workers (`crashes.backtrace`): a backtrace of the crashed
    /// thread, symbolicated without inlined frames, on standard error, where the host keeps it for the
    /// crash record.
    static let backtraceEnabled = "enable=yes,interactive=no,color=no,threads=crashed,registers=none,images=none,symbolicate=fast,output-to=stderr"
    static let backtraceDisabled = "enable=no"

    init(executable: String, service: String, spares: Int, group: any EventLoopGroup, logger: Logger, logLevel: String,
         backtrace: Bool,
         configuration: @escaping @Sendable (_ sockets: [ListeningSocket]) -> WorkerConfiguration,
         readinessDelay: @escaping @Sendable () -> Duration?, figures: WorkerFigures? = nil) {
        // The host's environment wins (ChildProcess keeps what is inherited), as the unit's `enable=no` does.
        self.backtrace = ProcessInfo.processInfo.environment["SWIFT_BACKTRACE"] ?? (backtrace ? Self.backtraceEnabled : Self.backtraceDisabled)
        self.executable = executable
        self.service = service
        self.spares = spares
        self.group = group
        self.logger = logger
        self.logLevel = logLevel
        self.configuration = configuration
        self.readinessDelay = readinessDelay
        self.figures = figures
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

    /// The addresses every worker of the service must refuse: sent to each live one, and to every later
    /// one with its configuration.
    func updateQuarantine(_ addresses: Set<String>) {
        state.withLockedValue { state in
            state.quarantine = addresses
            // Queued in order on each worker's channel (a send only queues): the last change arrives last.
            state.live.values.forEach { $0.send(.quarantine(addresses.sorted())) }
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
        var errorPipe: [Int32] = [-1, -1]
        guard inetinfo_pipe_cloexec(&errorPipe) == 0 else {
            let error = errno
            pair.forEach { Glibc.close($0) }
            throw ChildProcess.SpawnError(operation: "pipe2", errno: error)
        }
        let pid: pid_t
        do {
            pid = try ChildProcess.spawn(executable: executable, name: "inetinfo",
                                         arguments: ["worker", "--service", service, "--host-pid", "\(getpid())",
                                                     "--log-level", logLevel] + (logsToJournal ? ["--log-journal"] : []),
                                         descriptors: [pair[1]] + sockets.map(\.fd), standardError: errorPipe[1],
                                         environment: ["SWIFT_BACKTRACE": backtrace])
        } catch {
            (pair + errorPipe).forEach { Glibc.close($0) }
            throw error
        }
        Glibc.close(pair[1])
        Glibc.close(errorPipe[1])
        let standardError = WorkerStandardError(fd: errorPipe[0])
        let channel = group.next().makePromise(of: (any Channel).self)
        let worker = WorkerInstance(pid: pid, channel: channel.futureResult, standardError: standardError,
                                    backtraces: !backtrace.contains("enable=no"), logger: logger)
        standardError.start { worker.crashStarted() }
        // Everything but the instance number is known now: the worker builds its service while it waits,
        // so that a spare's start costs no more than the start itself. Sent under the lock that quarantine
        // changes take: the worker gets its first quarantine before any later change.
        var prepared = configuration(sockets)
        let figuresFile = figures?.create(for: pid, service: service)
        prepared.figuresFile = figuresFile
        state.withLockedValue { state in
            state.live[pid] = worker
            prepared.quarantine = state.quarantine.sorted()
            worker.send(.prepare(prepared))
        }
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
        let figures = self.figures
        Task.detached { [weak self] in
            let end = await ChildProcess.reap(pid)
            worker.reaped()
            // What it counted up to its end, crash or not, before the supervisor hears of the end.
            if let figuresFile { figures?.workerEnded(figuresFile) }
            // The crash report is complete once the worker's standard error is (whatever it started may
            // hold it a little longer: not for long).
            await standardError.finished(within: .seconds(1))
            self?.state.withLockedValue { _ = $0.live.removeValue(forKey: pid) }
            worker.ended(end)
        }
        return worker
    }
}

/// A worker process as the supervisor drives it.
///
/// The worker is our own binary, but one that crashed half-way or was subverted must not be able to hurt
/// the host: anything outside the protocol (a second ready report, a message only the host sends, a pong
/// for no waiting ping) ends it, and a failure's reason is cut to a few KiB.
final class WorkerInstance: InstanceHandle {
    let pid: Int32
    private let channel: EventLoopFuture<any Channel>
    private let standardError: WorkerStandardError?
    /// Whether the worker runs the Swift runtime's backtracer when it crashes.
    private let backtraces: Bool
    private let logger: Logger

    /// How long a worker whose runtime is writing its crash report is taken as alive: the backtracer
    /// stops every thread while it works, and a kill would lose the report.
    static let crashReportAllowance = Duration.seconds(10)

    private struct State {
        var events: (@Sendable (InstanceEvent) -> Void)?
        /// When the worker's crash output began, if it did.
        var crashingSince: ContinuousClock.Instant?
        /// `waitpid` returned: its pid (and process group) may belong to someone else from now on.
        var reaped = false
        var pings: [Int: @Sendable () -> Void] = [:]
        var nextPing = 0
        /// The pings up to this one were dropped unanswered (at the end, or when a crash report began):
        /// the worker's pong to one of them may still be on its way.
        var droppedThrough = 0
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

    init(pid: Int32, channel: EventLoopFuture<any Channel>, standardError: WorkerStandardError? = nil, backtraces: Bool = false,
         logger: Logger) {
        self.pid = pid
        self.channel = channel
        self.standardError = standardError
        self.backtraces = backtraces
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

    var crashReport: String? { standardError?.crashReport }

    /// Called by the reaper as soon as `waitpid` returns, before the end is known to everyone.
    func reaped() {
        state.withLockedValue { $0.reaped = true }
    }

    /// The runtime began its crash output: the worker is crashing, not hung. The pings it can no longer
    /// answer are answered for it (for ``crashReportAllowance``), so that it ends as what it is, a crash.
    func crashStarted() {
        let outstanding = state.withLockedValue { state in
            state.crashingSince = .now
            state.droppedThrough = state.nextPing
            defer { state.pings = [:] }
            return Array(state.pings.values)
        }
        logger.notice("worker crashing; waiting for its crash report", metadata: ["pid": "\(pid)"])
        outstanding.forEach { $0() }
    }

    func ping(answered: @escaping @Sendable () -> Void) {
        let crashing = state.withLockedValue { state in
            state.crashingSince.map { ContinuousClock.now - $0 < Self.crashReportAllowance } ?? false
        }
        if crashing { return answered() }
        let id = state.withLockedValue { state -> Int in
            state.nextPing += 1
            state.pings[state.nextPing] = answered
            return state.nextPing
        }
        send(.ping(id))
        if backtraces { watchForBacktracer(while: id) }
    }

    /// The runtime's backtracer (`swift-backtrace`, a child of the crashed worker) may take a while to
    /// print its first line, and meanwhile nothing in the worker answers: look for it while a ping waits.
    private func watchForBacktracer(while ping: Int, checks: Int = 20) {
        guard checks > 0 else { return }
        channel.whenSuccess { channel in
            channel.eventLoop.scheduleTask(in: .milliseconds(50)) {
                guard self.state.withLockedValue({ $0.pings[ping] != nil && $0.crashingSince == nil }) else { return }
                if ChildProcess.hasChild(named: "swift-backtrace", of: self.pid) {
                    self.crashStarted()
                } else {
                    self.watchForBacktracer(while: ping, checks: checks - 1)
                }
            }
        }
    }

    func requestStop() { send(.stop) }

    /// SIGKILL: whatever the worker is doing, it ends; nothing is ever abandoned in this mode. Its process
    /// group goes too: a worker killed while its runtime writes a crash report leaves no backtracer behind.
    func forceStop() {
        state.withLockedValue { state in
            guard state.end == nil, !state.reaped else { return }
            // The group is named by the worker's pid, which cannot be reused while the worker is unreaped.
            kill(-pid, SIGKILL)
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
            // The end (marked by the reaper) and a crash report drop the pings still waiting, possibly
            // before the channel delivers the worker's last bytes: a pong to a dropped ping is late, not a
            // violation (CI saw a trapping worker named by that race). A second answer to a ping is one.
            let answer = state.withLockedValue { state -> (@Sendable () -> Void)?? in
                if let answered = state.pings.removeValue(forKey: id) { return .some(answered) }
                return id >= 1 && id <= state.droppedThrough ? .some(nil) : .none
            }
            guard let answer else { return violation("an answer to no waiting ping") }
            answer?()
        case .prepare, .start, .ping, .stop, .fault, .quarantine:
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
            state.droppedThrough = state.nextPing
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
