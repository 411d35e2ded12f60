import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Starts, watches and restarts the hosted services.
///
/// Contract: the decisions are the per-service ``ServiceStateMachine``s'; this actor only feeds them
/// (operator requests, instance reports, timers, liveness ticks) and executes their effects through each
/// service's ``InstanceRunner``. It runs on an event loop of its own, so that neither a busy cooperative
/// pool nor a hung service instance can stop it from noticing failures; ``health`` tells the systemd
/// watchdog pinger (and `status`) whether this loop still runs.
public actor Supervisor: Service {
    public nonisolated let events: EventLog
    public nonisolated let health: SupervisorHealth
    public nonisolated let isolation: IsolationMode
    /// The supervisor's own loop. Nothing but the supervisor may block it (the host's `crash host --mode
    /// hang` does, on purpose).
    public nonisolated let eventLoop: any EventLoop
    public nonisolated var unownedExecutor: UnownedSerialExecutor { eventLoop.executor.asUnownedSerialExecutor() }

    /// One service: its machine, how its instances run, and the instance it currently drives.
    private final class Record {
        var machine: ServiceStateMachine
        let runner: any InstanceRunner
        let sockets: [ListeningSocket]
        var current: (number: Int, handle: any InstanceHandle)?
        var restartTimer: Task<Void, Never>?
        /// Operators waiting for a graceful stop of this service to finish.
        var stopWaiters: [CheckedContinuation<Void, Never>] = []
        /// `inetinfo_service_restarts_total{service,cause}`, every cause from the start (a series at 0
        /// is a fact too).
        let restartCounters: [RestartCause: CoreMetrics.Counter]
        /// `inetinfo_service_ping_duration_seconds{service}`: liveness ping round trips.
        let pingDurations: CoreMetrics.Timer

        init(_ registration: ServiceRegistration, metrics: any MetricsFactory) {
            machine = ServiceStateMachine(name: registration.name, settings: registration.settings,
                                          enabled: registration.enabled)
            runner = registration.runner
            sockets = registration.sockets
            let service = ("service", registration.name)
            restartCounters = Dictionary(uniqueKeysWithValues: RestartCause.allCases.map { cause in
                (cause, CoreMetrics.Counter(label: "inetinfo_service_restarts_total",
                                            dimensions: [service, ("cause", cause.rawValue)], factory: metrics))
            })
            pingDurations = CoreMetrics.Timer(label: "inetinfo_service_ping_duration_seconds", dimensions: [service],
                                              factory: metrics)
        }

        /// Lets go of the handle of instance `number` (its disposal or stop takes it over).
        func take(_ number: Int) -> (any InstanceHandle)? {
            guard let current, current.number == number else { return nil }
            self.current = nil
            return current.handle
        }
    }

    private let logger: Logger
    private let observer: (any InstanceObserver)?
    private let startedAt = ContinuousClock.now
    private let records: [String: Record]
    private let order: [String]
    /// The services as of the last input each was fed, for readers that must not wait for the supervisor's
    /// loop (the admin listener's `/readyz` and `/metrics` answer while it is wedged).
    private nonisolated let board: NIOLockedValueBox<[String: ServiceSnapshot]>
    private var tickTask: Task<Void, Never>?
    /// Set once ``run()`` is over: from then on nothing hops onto the supervisor's loop any more (its owner
    /// may shut it down). Timers and instance reports run off the loop and check it first.
    private nonisolated let over = NIOLockedValueBox(false)
    private var outcome: Result<Void, SupervisorError>?
    private var outcomeWaiter: CheckedContinuation<Result<Void, SupervisorError>, Never>?

    /// - Parameters:
    ///   - maxAbandoned: how many hung instances may be abandoned before ``health`` reports a problem.
    ///   - maxTickAge: how late the supervisor's tick may be before ``health`` reports a problem
    ///     (``SupervisorHealth/maxTickAge(watchdogMicroseconds:)``).
    ///   - eventLoop: the loop the supervisor runs on; give it one that no service uses.
    ///   - events: where state changes are recorded.
    ///   - observer: learns of every failed and every ended instance (the host's crash records).
    ///   - metrics: where restarts and liveness ping round trips are counted.
    public init(services: [ServiceRegistration], isolation: IsolationMode, maxAbandoned: Int = 3,
                maxTickAge: TimeAmount = SupervisorHealth.maxTickAge(watchdogMicroseconds: nil),
                eventLoop: any EventLoop, events: EventLog = EventLog(), observer: (any InstanceObserver)? = nil,
                metrics: any MetricsFactory = NOOPMetricsHandler.instance, logger: Logger) {
        self.eventLoop = eventLoop
        self.events = events
        self.observer = observer
        self.isolation = isolation
        self.logger = logger
        self.health = SupervisorHealth(maxAbandoned: maxAbandoned, maxTickAge: maxTickAge)
        self.order = services.map(\.name)
        let records = Dictionary(services.map { ($0.name, Record($0, metrics: metrics)) }, uniquingKeysWith: { first, _ in first })
        self.records = records
        self.board = NIOLockedValueBox(records.mapValues(Self.snapshot))
    }

    // MARK: - Running

    /// Starts every enabled service and supervises them until a graceful shutdown (or ``shutdown()``),
    /// then stops them all. Throws ``SupervisorError/escalated(service:reason:)`` when a service with the
    /// `escalate` outcome exceeds its restart intensity.
    public func run() async throws {
        startTicking()
        for name in order { try? feed(name, .start(.hostStarted)) }
        let result = await withGracefulShutdownHandler {
            await self.waitForOutcome()
        } onGracefulShutdown: {
            Task { await self.shutdown() }
        }
        for name in order { await stopSettled(name) }
        records.values.forEach { $0.runner.shutDown() }
        tickTask?.cancel()
        over.withLockedValue { $0 = true }
        events.finish()
        if case .failure(let error) = result { throw error }
    }

    /// Ends ``run()``: every service is stopped gracefully.
    public func shutdown() {
        finish(.success(()))
    }

    private func waitForOutcome() async -> Result<Void, SupervisorError> {
        if let outcome { return outcome }
        return await withCheckedContinuation { outcomeWaiter = $0 }
    }

    private func finish(_ result: Result<Void, SupervisorError>) {
        guard outcome == nil else { return }
        outcome = result
        let reason = if case .failure = result { "host escalating" } else { "host shutting down" }
        for name in order { try? feed(name, .hostShutdown(reason: reason)) }
        outcomeWaiter?.resume(returning: result)
        outcomeWaiter = nil
    }

    private var shuttingDown: Bool { outcome != nil }

    // MARK: - Inspection

    public func snapshot() -> [ServiceSnapshot] {
        order.compactMap { records[$0].map(Self.snapshot) }
    }

    /// The services as they were after the last input each was fed: what ``snapshot()`` says, without
    /// waiting for the supervisor's loop (which may be wedged, or busy).
    public nonisolated func latestSnapshot() -> [ServiceSnapshot] {
        board.withLockedValue { board in order.compactMap { board[$0] } }
    }

    public func snapshot(of name: String) throws(SupervisorError) -> ServiceSnapshot {
        Self.snapshot(try record(name))
    }

    private static func snapshot(_ record: Record) -> ServiceSnapshot {
        let machine = record.machine
        return ServiceSnapshot(name: machine.name, state: machine.state, instance: machine.instanceNumber,
                               restarts: machine.restarts, since: machine.since, listen: record.sockets.map(\.address),
                               lastFailure: machine.lastFailure, enabled: machine.enabled, pid: record.current?.handle.pid)
    }

    /// The supervision settings a service runs with now.
    public func settings(of name: String) throws(SupervisorError) -> SupervisionSettings {
        try record(name).machine.settings
    }

    /// The running instance of a service, for the host's fault injection.
    public func runningInstance(of name: String) throws(SupervisorError) -> any InstanceHandle {
        let record = try record(name)
        guard let running = record.machine.runningInstance, let current = record.current,
              current.number == running.number
        else { throw .notRunning(name, state: record.machine.state) }
        return current.handle
    }

    // MARK: - Operator commands

    /// Starts a stopped or failed service, forgetting its backoff and restart history.
    public func startService(_ name: String) throws(SupervisorError) {
        guard !shuttingDown else { throw .shuttingDown }
        try feed(name, .start(.operator))
    }

    /// Stops a service gracefully; it stays stopped until started again. Stopping a stopped service is a no-op.
    public func stopService(_ name: String, reason: String = "stopped by operator") async throws(SupervisorError) {
        try feed(name, .stop(reason: reason))
        await stopSettled(name)
    }

    /// Stops (if running) and starts a service again. Not counted as a restart after a failure.
    public func restartService(_ name: String) async throws(SupervisorError) {
        guard !shuttingDown else { throw .shuttingDown }
        try feed(name, .restart)
        await stopSettled(name)
    }

    /// Applies new settings and enablement (a reload). Newly disabled services stop; newly enabled ones start.
    public func apply(settings: [String: SupervisionSettings], enabled: [String: Bool]) async {
        for name in order {
            if let new = settings[name] { try? feed(name, .settingsChanged(new)) }
            guard let wanted = enabled[name] else { continue }
            try? feed(name, .setEnabled(wanted, reason: wanted ? "enabled by reload" : "disabled by reload"))
            await stopSettled(name)
        }
    }

    public func setMaxAbandoned(_ limit: Int) {
        health.setMaxAbandoned(limit)
    }

    /// Returns once no graceful stop of `name` is under way.
    private func stopSettled(_ name: String) async {
        guard let record = records[name], record.machine.state == .stopping else { return }
        await withCheckedContinuation { record.stopWaiters.append($0) }
    }

    // MARK: - Feeding the machines

    private func feed(_ name: String, _ input: ServiceStateMachine.Input) throws(SupervisorError) {
        let record = try record(name)
        let restartsBefore = record.machine.restartsByCause
        let effects = try record.machine.handle(input, at: .now())
        for (cause, count) in record.machine.restartsByCause where count != restartsBefore[cause] {
            record.restartCounters[cause]?.increment(by: count - (restartsBefore[cause] ?? 0))
        }
        var failure: String?
        for effect in effects {
            if case .instanceFailed(let number, let reason) = effect {
                failure = reason
                // Before the disposal that follows: a hung instance is still as it was when it stopped answering.
                let hung = effects.contains { if case .dispose(number, true, _) = $0 { true } else { false } }
                let handle = record.current.flatMap { $0.number == number ? $0.handle : nil }
                observer?.instanceFailed(InstanceFailureReport(service: name, instance: number, reason: reason, hung: hung,
                                                               handle: handle))
            }
            execute(effect, for: name, record)
        }
        // An instance the machine let go of without a stop or a disposal (it ended by itself) is over.
        if let current = record.current, record.machine.currentInstance?.number != current.number {
            record.current = nil
        }
        if case .ended(let number, _) = input { observer?.instanceEnded(service: name, instance: number) }
        let snapshot = Self.snapshot(record)
        board.withLockedValue { $0[name] = snapshot }
        if record.machine.state != .stopping, !record.stopWaiters.isEmpty {
            let waiters = record.stopWaiters
            record.stopWaiters = []
            waiters.forEach { $0.resume() }
        }
        // Shared isolation: the others go down with the failed one, after it has been dealt with.
        if let failure, isolation == .shared {
            for peer in order where peer != name {
                try? feed(peer, .peerFailed(reason: "shared fate: \(name) failed: \(failure)"))
            }
        }
    }

    /// Feeds an input that comes from an instance or a timer: it cannot be refused.
    private func report(_ name: String, _ input: ServiceStateMachine.Input) {
        try? feed(name, input)
    }

    /// Reports from anywhere (an instance's thread, a timer): hops onto the supervisor's loop, unless the
    /// supervisor is over. Straight onto the loop, not through a task: a task would first wait for a
    /// thread of the cooperative pool, a second hop on the path of every failure and every ready report.
    private nonisolated func deliver(_ name: String, _ input: ServiceStateMachine.Input) {
        guard !over.withLockedValue({ $0 }) else { return }
        eventLoop.execute { self.assumeIsolated { $0.report(name, input) } }
    }

    private func execute(_ effect: ServiceStateMachine.Effect, for name: String, _ record: Record) {
        switch effect {
        case .launch(let number):
            launch(name, number: number, record)
        case .armStartupTimer(let number, let delay):
            // Timers sleep off the supervisor's loop; a stale one changes nothing (the machine checks).
            Task.detached { [weak self] in
                try? await Task.sleep(for: delay)
                self?.deliver(name, .startupDeadline(instance: number))
            }
        case .armRestartTimer(let token, let delay):
            record.restartTimer?.cancel()
            record.restartTimer = Task.detached { [weak self] in
                try? await Task.sleep(for: delay)
                guard !Task.isCancelled else { return }
                self?.deliver(name, .restartDue(token: token))
            }
        case .ping(let number):
            guard let current = record.current, current.number == number else { return }
            let sent = ContinuousClock.now
            let durations = record.pingDurations
            current.handle.ping { [weak self] in
                let (seconds, attoseconds) = (ContinuousClock.now - sent).components
                durations.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
                self?.deliver(name, .pingAnswered(instance: number))
            }
        case .stop(let number, let gracePeriod):
            guard let handle = record.take(number) else { return report(name, .stopFinished(instance: number, abandoned: false)) }
            Task {
                let abandoned = await self.stop(handle, of: name, number: number, gracePeriod: gracePeriod)
                await self.report(name, .stopFinished(instance: number, abandoned: abandoned))
            }
        case .dispose(let number, let hung, let gracePeriod):
            guard let handle = record.take(number) else { return }
            handle.forceStop()
            if hung && !handle.forcedStopIsCertain { return abandon(handle, of: name, number: number) }
            Task.detached { [weak self] in
                if await !Self.waitForEnd(of: handle, timeout: gracePeriod) {
                    self?.abandon(handle, of: name, number: number)
                }
            }
        case .record(let from, let to, let number, let reason):
            let now = Date()
            let event = SupervisorEvent(time: now, offsetMs: (ContinuousClock.now - startedAt).milliseconds, service: name,
                                        instance: number, from: from, to: to, reason: reason)
            logger.log(level: to == .failed ? .error : .info, "service state changed", metadata: [
                "service": "\(name)", "instance": "\(number)", "from": "\(from.rawValue)", "to": "\(to.rawValue)",
                "reason": "\(reason)",
            ])
            events.append(event)
        case .instanceFailed(let number, let reason):
            logger.error("service failed", metadata: ["service": "\(name)", "instance": "\(number)", "reason": "\(reason)"])
        case .escalate(let reason):
            logger.critical("restart intensity exceeded; escalating", metadata: ["service": "\(name)", "reason": "\(reason)"])
            finish(.failure(.escalated(service: name, reason: reason)))
        }
    }

    // MARK: - Instances

    private func launch(_ name: String, number: Int, _ record: Record) {
        var instanceLogger = logger
        instanceLogger[metadataKey: "service"] = "\(name)"
        instanceLogger[metadataKey: "instance"] = "\(number)"
        let spec = InstanceSpec(service: name, number: number, sockets: record.sockets, logger: instanceLogger)
        let handle = record.runner.launch(spec) { [weak self] event in
            switch event {
            case .ready: self?.deliver(name, .ready(instance: number))
            case .failed(let reason): self?.deliver(name, .failed(instance: number, reason: reason))
            }
        }
        record.current = (number, handle)
        Task.detached { [weak self] in
            let end = await handle.ended()
            self?.deliver(name, .ended(instance: number, end))
        }
    }

    /// Graceful stop, then forced after `gracePeriod`, then abandoned after one more second.
    /// Returns whether the instance was abandoned.
    private func stop(_ handle: any InstanceHandle, of name: String, number: Int, gracePeriod: Duration) async -> Bool {
        handle.requestStop()
        if await Self.waitForEnd(of: handle, timeout: gracePeriod) { return false }
        handle.forceStop()
        if await Self.waitForEnd(of: handle, timeout: .seconds(1)) { return false }
        abandon(handle, of: name, number: number)
        return true
    }

    /// Gives up on an instance that does not end. Should it end after all (its threads came back), it no
    /// longer counts against the watchdog.
    private nonisolated func abandon(_ handle: any InstanceHandle, of name: String, number: Int) {
        health.recordAbandoned()
        logger.error("instance abandoned: it does not stop", metadata: [
            "service": "\(name)", "instance": "\(number)", "abandoned": "\(health.abandonedInstances)",
        ])
        let health = self.health
        let logger = self.logger
        Task.detached {
            _ = await handle.ended()
            health.abandonedEnded()
            logger.notice("abandoned instance ended after all", metadata: ["service": "\(name)", "instance": "\(number)"])
        }
    }

    private static func waitForEnd(of handle: any InstanceHandle, timeout: Duration) async -> Bool {
        await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let resumed = NIOLockedValueBox(false)
            let resume: @Sendable (Bool) -> Void = { value in
                let first = resumed.withLockedValue { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: value) }
            }
            Task {
                _ = await handle.ended()
                resume(true)
            }
            Task {
                try? await Task.sleep(for: timeout)
                resume(false)
            }
        }
    }

    // MARK: - Liveness

    private func startTicking() {
        tickTask = Task.detached { [weak self] in
            while !Task.isCancelled, self?.over.withLockedValue({ $0 }) == false {
                guard let interval = await self?.tickInterval() else { return }
                try? await Task.sleep(for: interval)
                await self?.tick()
            }
        }
    }

    /// Often enough to notice a missed ping within a fraction of the shortest timeout.
    private func tickInterval() -> Duration {
        let shortest = records.values.map { min($0.machine.settings.livenessInterval, $0.machine.settings.livenessTimeout) }
            .min() ?? .seconds(1)
        return min(max(shortest / 4, .milliseconds(10)), .milliseconds(250))
    }

    private func tick() {
        health.tick()
        for name in order { report(name, .tick) }
    }

    private func record(_ name: String) throws(SupervisorError) -> Record {
        guard let record = records[name] else { throw .unknownService(name, known: order) }
        return record
    }
}

extension Duration {
    /// The duration in whole milliseconds (truncated), for records and messages.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
