import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle

/// Starts, watches and restarts the hosted services (the in-process tier of supervision).
///
/// The actor runs on an event loop of its own, so that neither a busy cooperative pool nor a hung
/// service instance can stop it from noticing failures; ``health`` tells the systemd watchdog pinger
/// whether this loop still runs.
///
/// Every state change goes through ``transition(_:to:reason:)``, which records a ``SupervisorEvent``.
public actor Supervisor: Service {
    public nonisolated let events = EventLog()
    public nonisolated let health: SupervisorHealth
    public nonisolated let isolation: IsolationMode

    private let loop: any EventLoop
    public nonisolated var unownedExecutor: UnownedSerialExecutor { loop.executor.asUnownedSerialExecutor() }

    private let logger: Logger
    private let clock = ContinuousClock()
    private let startedAt: ContinuousClock.Instant
    private var slots: [String: ServiceSlot] = [:]
    private let order: [String]
    private var tickTask: Task<Void, Never>?
    private var outcome: Result<Void, SupervisorError>?
    private var outcomeWaiter: CheckedContinuation<Result<Void, SupervisorError>, Never>?
    private var shuttingDown = false

    /// - Parameters:
    ///   - eventLoop: the loop the supervisor runs on; give it one that no service uses.
    ///   - maxAbandoned: how many hung instances may be abandoned before ``health`` reports a problem.
    public init(services: [ServiceRegistration], isolation: IsolationMode, maxAbandoned: Int = 3,
                eventLoop: any EventLoop, logger: Logger) {
        self.loop = eventLoop
        self.isolation = isolation
        self.logger = logger
        self.health = SupervisorHealth(maxAbandoned: maxAbandoned)
        self.order = services.map(\.service.name)
        self.startedAt = clock.now
        for registration in services {
            slots[registration.service.name] = ServiceSlot(registration)
        }
    }

    // MARK: - Running

    /// Starts every enabled service and supervises them until a graceful shutdown (or ``shutdown()``),
    /// then stops them all. Throws ``SupervisorError/escalated(service:reason:)`` when a service with the
    /// `escalate` outcome exceeds its restart intensity.
    public func run() async throws {
        startTicking()
        for name in order where slots[name]!.enabled {
            launch(name, reason: "host started")
        }
        let result = await withGracefulShutdownHandler {
            await self.waitForOutcome()
        } onGracefulShutdown: {
            Task { await self.shutdown() }
        }
        await stopAll(reason: result.isFailure ? "host escalating" : "host shutting down")
        tickTask?.cancel()
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
        shuttingDown = true
        outcomeWaiter?.resume(returning: result)
        outcomeWaiter = nil
    }

    // MARK: - Inspection

    public func snapshot() -> [ServiceSnapshot] {
        order.map { name in
            let slot = slots[name]!
            return ServiceSnapshot(name: name, state: slot.state, instance: slot.instanceNumber,
                                   restarts: slot.restarts, since: slot.since,
                                   listen: slot.sockets.map(\.address), lastFailure: slot.lastFailure,
                                   enabled: slot.enabled)
        }
    }

    public func snapshot(of name: String) throws -> ServiceSnapshot {
        _ = try slot(name)
        return snapshot().first { $0.name == name }!
    }

    // MARK: - Operator commands

    /// Starts a stopped or failed service, forgetting its backoff and restart history.
    public func startService(_ name: String) throws {
        let slot = try slot(name)
        guard !shuttingDown else { throw SupervisorError.shuttingDown }
        switch slot.state {
        case .starting, .running, .stopping:
            throw SupervisorError.alreadyRunning(name, state: slot.state)
        case .stopped, .failed, .backoff:
            slot.enabled = true
            slot.backoff.reset()
            slot.intensity.reset()
            launch(name, reason: "started by operator")
        }
    }

    /// Stops a service gracefully; it stays stopped until started again. Stopping a stopped service is a no-op.
    public func stopService(_ name: String, reason: String = "stopped by operator") async throws {
        let slot = try slot(name)
        slot.pendingRestart?.cancel()
        slot.pendingRestart = nil
        guard let instance = slot.current else {
            if slot.state != .stopped { transition(name, to: .stopped, reason: reason) }
            return
        }
        slot.current = nil
        transition(name, to: .stopping, reason: reason)
        let ended = await stop(instance, timeout: slot.settings.shutdownTimeout)
        transition(name, to: .stopped, reason: ended ? reason : "\(reason); instance did not stop and was abandoned")
    }

    /// Stops (if running) and starts a service again. Not counted as a restart after a failure.
    public func restartService(_ name: String) async throws {
        guard !shuttingDown else { throw SupervisorError.shuttingDown }
        try await stopService(name, reason: "restart requested by operator")
        guard !shuttingDown, let slot = slots[name], slot.current == nil else { return }
        slot.enabled = true
        slot.backoff.reset()
        launch(name, reason: "restarted by operator")
    }

    /// Injects a failure into the running instance of a service.
    public func inject(_ fault: Fault, into name: String) throws {
        let slot = try slot(name)
        guard slot.state == .running, let instance = slot.current, instance.context.hasEventLoops else {
            throw SupervisorError.notRunning(name, state: slot.state)
        }
        logger.warning("injecting fault", metadata: ["service": "\(name)", "instance": "\(instance.context.number)",
                                                     "fault": "\(fault.rawValue)"])
        switch fault {
        case .throw:
            instance.context.fail(InstanceFailure("injected fault: throw"))
        case .hang:
            instance.context.withLiveEventLoops { eventLoops in
                for eventLoop in eventLoops { eventLoop.execute { FaultActions.blockForever() } }
            }
        case .stall:
            let duration = slot.settings.livenessTimeout * 3
            instance.context.withLiveEventLoops { eventLoops in
                for eventLoop in eventLoops { eventLoop.execute { FaultActions.block(for: duration) } }
            }
        case .listener:
            guard instance.context.closeListeners() else {
                throw SupervisorError.unsupportedFault(name, fault: fault)
            }
        case .slowStart:
            slot.nextInstanceIsSlow = true
            instance.context.fail(InstanceFailure("injected fault: slow-start"))
        case .trap:
            let number = instance.context.number
            instance.context.withLiveEventLoops { eventLoops in
                // A short delay lets the request that asked for the trap be answered first.
                _ = eventLoops.first?.scheduleTask(in: .milliseconds(100)) {
                    fatalError("injected fault: trap in \(name) instance \(number)")
                }
            }
        }
    }

    /// Blocks the supervisor's own loop forever (`inetinfoctl crash host --mode hang`): nothing is
    /// supervised any more and the systemd watchdog pings stop, so the outer tier must recover.
    public func wedge() {
        logger.critical("supervisor wedged on request; watchdog pings stop")
        FaultActions.blockForever()
    }

    /// Applies new settings and enablement (a reload). Newly disabled services stop; newly enabled ones start.
    public func apply(settings: [String: SupervisionSettings], enabled: [String: Bool]) async {
        for name in order {
            guard let slot = slots[name] else { continue }
            if let new = settings[name] { slot.update(settings: new) }
            guard let wanted = enabled[name], wanted != slot.enabled else { continue }
            slot.enabled = wanted
            if wanted {
                if slot.current == nil, !shuttingDown { launch(name, reason: "enabled by reload") }
            } else {
                try? await stopService(name, reason: "disabled by reload")
            }
        }
    }

    public func setMaxAbandoned(_ limit: Int) {
        health.setMaxAbandoned(limit)
    }

    // MARK: - Instance lifecycle

    private func launch(_ name: String, reason: String) {
        guard let slot = slots[name], !shuttingDown else { return }
        slot.pendingRestart?.cancel()
        slot.pendingRestart = nil
        slot.instanceNumber += 1
        let number = slot.instanceNumber
        let slow = slot.nextInstanceIsSlow
        slot.nextInstanceIsSlow = false
        var instanceLogger = logger
        instanceLogger[metadataKey: "service"] = "\(name)"
        instanceLogger[metadataKey: "instance"] = "\(number)"
        let context = InstanceContext(service: name, number: number, sockets: slot.sockets, logger: instanceLogger,
                                      readinessDelay: slow ? slot.settings.startupTimeout + .seconds(1) : nil) {
            [weak self] event in
            Task { await self?.handle(event) }
        }
        transition(name, to: .starting, reason: reason)
        let service = slot.service
        let task = Task.detached { [weak self] in
            var failure: (any Error)?
            do { try await service.run(context) } catch { failure = error }
            await self?.instanceEnded(name, number: number, error: failure)
        }
        slot.current = RunningInstance(context: context, task: task, startedAt: clock.now)
        let startupTimeout = slot.settings.startupTimeout
        Task { [weak self] in
            try? await Task.sleep(for: startupTimeout)
            await self?.startupDeadlinePassed(name, number: number, timeout: startupTimeout)
        }
    }

    private func handle(_ event: InstanceContext.InstanceEvent) {
        switch event {
        case .ready(let name, let number):
            guard let slot = slots[name], var instance = slot.current, instance.context.number == number,
                  slot.state == .starting
            else { return }
            instance.lastPong = clock.now
            slot.current = instance
            transition(name, to: .running, reason: "ready")
        case .failed(let name, let number, let failure):
            handleFailure(name, number: number, reason: failure.reason)
        }
    }

    private func startupDeadlinePassed(_ name: String, number: Int, timeout: Duration) {
        guard let slot = slots[name], slot.current?.context.number == number, slot.state == .starting else { return }
        handleFailure(name, number: number, reason: "startup timeout: not ready after \(timeout.milliseconds) ms")
    }

    private func instanceEnded(_ name: String, number: Int, error: (any Error)?) {
        guard let slot = slots[name], let instance = slot.current, instance.context.number == number else {
            return  // an instance already stopped, replaced or abandoned
        }
        if let error {
            handleFailure(name, number: number, reason: Self.describe(error))
            return
        }
        slot.current = nil
        let uptime = clock.now - instance.startedAt
        if slot.settings.restartPolicy.restarts(afterFailure: false) {
            scheduleRestart(name, uptime: uptime, reason: "exited")
        } else {
            transition(name, to: .stopped, reason: "exited")
        }
    }

    /// The failure path: the failed instance is disposed of, peers follow it in shared isolation, and
    /// each affected service is restarted or given up on according to its policy and intensity.
    private func handleFailure(_ name: String, number: Int, reason: String, hung: Bool = false) {
        guard let slot = slots[name], let instance = slot.current, instance.context.number == number else { return }
        let now = clock.now
        slot.current = nil
        slot.lastFailure = FailureRecord(reason: reason, at: Date())
        logger.error("service failed", metadata: ["service": "\(name)", "instance": "\(number)", "reason": "\(reason)"])
        dispose(instance, of: name, hung: hung)

        var affected = [(name: name, uptime: now - instance.startedAt, reason: reason)]
        if isolation == .shared {
            let sharedReason = "shared fate: \(name) failed: \(reason)"
            for peerName in order where peerName != name {
                guard let peer = slots[peerName], let peerInstance = peer.current else { continue }
                peer.current = nil
                peer.lastFailure = FailureRecord(reason: sharedReason, at: Date())
                dispose(peerInstance, of: peerName, hung: false)
                affected.append((peerName, now - peerInstance.startedAt, sharedReason))
            }
        }
        for service in affected {
            recover(service.name, uptime: service.uptime, reason: service.reason)
        }
    }

    private func recover(_ name: String, uptime: Duration, reason: String) {
        guard let slot = slots[name], !shuttingDown else { return }
        guard slot.settings.restartPolicy.restarts(afterFailure: true) else {
            transition(name, to: .failed, reason: "\(reason); not restarted (\(slot.settings.restartPolicy.rawValue))")
            return
        }
        guard slot.intensity.admit(at: clock.now) else {
            let limit = "more than \(slot.settings.maxRestarts) restarts in \(slot.settings.restartWindow.milliseconds / 1000) s"
            transition(name, to: .failed, reason: "\(reason); \(limit)")
            if slot.settings.onMaxRestarts == .escalate {
                logger.critical("restart intensity exceeded; escalating", metadata: ["service": "\(name)"])
                finish(.failure(.escalated(service: name, reason: limit)))
            } else {
                logger.error("restart intensity exceeded; service marked failed", metadata: ["service": "\(name)"])
            }
            return
        }
        slot.restarts += 1
        scheduleRestart(name, uptime: uptime, reason: reason)
    }

    private func scheduleRestart(_ name: String, uptime: Duration, reason: String) {
        guard let slot = slots[name] else { return }
        let delay = slot.backoff.nextDelay(afterUptime: uptime)
        transition(name, to: .backoff, reason: "\(reason); restarting in \(delay.milliseconds) ms")
        if delay == .zero {
            launch(name, reason: "restart after failure")
            return
        }
        slot.pendingRestart = Task { [weak self] in
            try? await Task.sleep(for: delay)
            guard !Task.isCancelled else { return }
            await self?.restartDue(name)
        }
    }

    private func restartDue(_ name: String) {
        guard let slot = slots[name], slot.state == .backoff, slot.current == nil else { return }
        launch(name, reason: "restart after backoff")
    }

    /// Ends an instance that failed: its connections are closed at once. One that does not end within
    /// its shutdown timeout (or is hung, so cannot) is abandoned and counted.
    private func dispose(_ instance: RunningInstance, of name: String, hung: Bool) {
        instance.context.forceStop()
        if hung {
            abandon(instance, of: name)
            return
        }
        let timeout = slots[name]?.settings.shutdownTimeout ?? .seconds(5)
        Task { [weak self] in
            if await !Self.waitForEnd(of: instance.task, timeout: timeout) {
                await self?.abandon(instance, of: name)
            }
        }
    }

    private func abandon(_ instance: RunningInstance, of name: String) {
        health.recordAbandoned()
        logger.error("instance abandoned: it does not stop", metadata: [
            "service": "\(name)", "instance": "\(instance.context.number)",
            "abandoned": "\(health.abandonedInstances)",
        ])
        // Should its threads come back after all, it tears itself down (its stop was forced) and no
        // longer counts against the watchdog.
        let health = self.health
        let logger = self.logger
        let number = instance.context.number
        Task {
            await instance.task.value
            health.abandonedEnded()
            logger.notice("abandoned instance ended after all", metadata: ["service": "\(name)", "instance": "\(number)"])
        }
    }

    /// Graceful stop, then forced after `timeout`, then abandoned after one more second.
    private func stop(_ instance: RunningInstance, timeout: Duration) async -> Bool {
        instance.context.requestStop()
        if await Self.waitForEnd(of: instance.task, timeout: timeout) { return true }
        instance.context.forceStop()
        if await Self.waitForEnd(of: instance.task, timeout: .seconds(1)) { return true }
        abandon(instance, of: instance.context.service)
        return false
    }

    private func stopAll(reason: String) async {
        await withTaskGroup(of: Void.self) { group in
            for name in order {
                guard let slot = slots[name] else { continue }
                slot.pendingRestart?.cancel()
                slot.pendingRestart = nil
                guard let instance = slot.current else {
                    if slot.state == .backoff || slot.state == .starting { transition(name, to: .stopped, reason: reason) }
                    continue
                }
                slot.current = nil
                transition(name, to: .stopping, reason: reason)
                let timeout = slot.settings.shutdownTimeout
                group.addTask {
                    let ended = await self.stop(instance, timeout: timeout)
                    await self.transition(name, to: .stopped, reason: ended ? reason : "\(reason); instance abandoned")
                }
            }
        }
    }

    private static func waitForEnd(of task: Task<Void, Never>, timeout: Duration) async -> Bool {
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
                await task.value
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
        tickTask = Task { [weak self] in
            while !Task.isCancelled {
                guard let interval = await self?.tickInterval() else { return }
                try? await Task.sleep(for: interval)
                await self?.tick()
            }
        }
    }

    /// Often enough to notice a missed ping within a fraction of the shortest timeout.
    private func tickInterval() -> Duration {
        let shortest = slots.values.map { min($0.settings.livenessInterval, $0.settings.livenessTimeout) }.min() ?? .seconds(1)
        return min(max(shortest / 4, .milliseconds(10)), .milliseconds(250))
    }

    private func tick() {
        health.tick()
        let now = clock.now
        for name in order {
            guard let slot = slots[name], slot.state == .running, var instance = slot.current else { continue }
            guard instance.context.hasEventLoops else { continue }
            let settings = slot.settings
            if let sent = instance.pingSentAt {
                if now - sent > settings.livenessTimeout {
                    handleFailure(name, number: instance.context.number,
                                  reason: "hung: no answer to a liveness ping within \(settings.livenessTimeout.milliseconds) ms",
                                  hung: true)
                }
            } else if now - instance.lastPong >= settings.livenessInterval {
                instance.pingSentAt = now
                slot.current = instance
                let number = instance.context.number
                let pings = instance.context.withLiveEventLoops { eventLoops in eventLoops.map { $0.submit {} } }
                EventLoopFuture.andAllComplete(pings, on: loop).whenComplete { [weak self] _ in
                    Task { await self?.pong(name, number: number) }
                }
            }
        }
    }

    private func pong(_ name: String, number: Int) {
        guard let slot = slots[name], var instance = slot.current, instance.context.number == number else { return }
        instance.pingSentAt = nil
        instance.lastPong = clock.now
        slot.current = instance
    }

    // MARK: - Events

    private func transition(_ name: String, to state: ServiceState, reason: String) {
        guard let slot = slots[name] else { return }
        let from = slot.state
        let now = Date()
        slot.state = state
        slot.since = now
        let offset = clock.now - startedAt
        let event = SupervisorEvent(time: now, offsetMs: offset.milliseconds, service: name,
                                    instance: slot.instanceNumber, from: from, to: state, reason: reason)
        let level: Logger.Level = state == .failed ? .error : .info
        logger.log(level: level, "service state changed", metadata: [
            "service": "\(name)", "instance": "\(slot.instanceNumber)", "from": "\(from.rawValue)",
            "to": "\(state.rawValue)", "reason": "\(reason)",
        ])
        events.append(event)
    }

    private func slot(_ name: String) throws -> ServiceSlot {
        guard let slot = slots[name] else { throw SupervisorError.unknownService(name, known: order) }
        return slot
    }

    private static func describe(_ error: any Error) -> String {
        if let failure = error as? InstanceFailure { return failure.reason }
        return String(describing: error)
    }
}

extension Result {
    var isFailure: Bool {
        if case .failure = self { return true }
        return false
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
