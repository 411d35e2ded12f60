import Foundation

/// When something happened, as the supervisor saw it: the monotonic instant measures durations, the
/// wall-clock date goes into records people read.
public struct Moment: Sendable, Equatable {
    public var instant: ContinuousClock.Instant
    public var date: Date

    public init(instant: ContinuousClock.Instant, date: Date) {
        self.instant = instant
        self.date = date
    }

    public static func now() -> Moment { Moment(instant: .now, date: Date()) }
}

/// The life of one supervised service, as a pure state machine: inputs in, effects out.
///
/// Contract: every input is one case of ``Input`` and goes through ``handle(_:at:)``, which changes the
/// state and returns what the caller must do (``Effect``), in order. Nothing in here starts a task,
/// reads a clock or touches an instance; the ``Supervisor`` actor feeds it and executes its effects.
/// Inputs about an instance carry its number: an input about an instance that is no longer the current
/// one (a late ready report, a timer armed for a previous instance) changes nothing.
public struct ServiceStateMachine: Sendable {
    /// The instance the machine is responsible for at the moment.
    public struct Instance: Sendable, Equatable {
        public let number: Int
        public let startedAt: ContinuousClock.Instant
        /// When the unanswered liveness ping was sent; `nil` when none is outstanding.
        var pingSentAt: ContinuousClock.Instant?
        var lastPong: ContinuousClock.Instant
    }

    /// What follows a graceful stop once the instance has ended.
    enum AfterStop: Sendable, Equatable {
        case stay(reason: String)
        case start(stopReason: String, startReason: String)
    }

    enum Phase: Sendable, Equatable {
        case stopped
        case starting(Instance)
        case running(Instance)
        case stopping(Instance, then: AfterStop)
        /// Waiting to restart; `token` identifies the restart timer that was armed.
        case backoff(token: Int)
        case failed
    }

    /// Why a service is started.
    public enum StartCause: Sendable, Equatable {
        case hostStarted
        /// An operator's start: the backoff and restart history are forgotten.
        case `operator`
    }

    public enum Input: Sendable, Equatable {
        case start(StartCause)
        /// The operator's restart: stop (if running), then start. Not counted as a restart after a failure.
        case restart
        /// A graceful stop (operator, or disabled by a reload); the service stays stopped.
        case stop(reason: String)
        /// The host is shutting down: stop, and never start again.
        case hostShutdown(reason: String)
        case setEnabled(Bool, reason: String)
        case settingsChanged(SupervisionSettings)

        case ready(instance: Int)
        /// The instance reported a failure, or its runner saw one.
        case failed(instance: Int, reason: String)
        case ended(instance: Int, InstanceEnd)
        /// A graceful stop the machine asked for (``Effect/stop(instance:gracePeriod:)``) is over.
        case stopFinished(instance: Int, abandoned: Bool)
        /// Shared isolation: another service failed, and this one goes down with it.
        case peerFailed(reason: String)

        /// The periodic liveness check.
        case tick
        case pingAnswered(instance: Int)
        case startupDeadline(instance: Int)
        case restartDue(token: Int)
    }

    public enum Effect: Sendable, Equatable {
        /// Start instance `instance` on the service's sockets.
        case launch(instance: Int)
        /// Feed ``Input/startupDeadline(instance:)`` after `after`.
        case armStartupTimer(instance: Int, after: Duration)
        /// Feed ``Input/restartDue(token:)`` after `after`.
        case armRestartTimer(token: Int, after: Duration)
        /// Ping the instance; feed ``Input/pingAnswered(instance:)`` when it answers.
        case ping(instance: Int)
        /// Ask the instance to stop; force it after `gracePeriod`, abandon it if even that fails; then feed
        /// ``Input/stopFinished(instance:abandoned:)``.
        case stop(instance: Int, gracePeriod: Duration)
        /// Dispose of an instance that failed: force it at once; abandon it if it is `hung`, or if it has
        /// not ended after `gracePeriod`. Nothing is fed back.
        case dispose(instance: Int, hung: Bool, gracePeriod: Duration)
        /// The service's state changed: log it and append it to the event log.
        case record(from: ServiceState, to: ServiceState, instance: Int, reason: String)
        /// The instance failed on its own (not by shared fate): log it; in shared isolation the other
        /// services follow (``Input/peerFailed(reason:)``).
        case instanceFailed(instance: Int, reason: String)
        /// The restart intensity was exceeded with the `escalate` outcome: the host must exit.
        case escalate(reason: String)
    }

    public let name: String
    public private(set) var settings: SupervisionSettings
    public private(set) var enabled: Bool
    public private(set) var instanceNumber = 0
    /// Restarts after failures: the service's own, or (shared isolation) another service's.
    public private(set) var restarts = 0
    /// ``restarts`` by what failed (`inetinfo_service_restarts_total{cause}`).
    public private(set) var restartsByCause: [RestartCause: Int] = [:]
    public private(set) var lastFailure: FailureRecord?
    public private(set) var since: Date
    private(set) var phase: Phase = .stopped
    private var backoff: RestartBackoff
    private var intensity: RestartIntensity
    private var closing = false
    private var nextRestartToken = 0

    public init(name: String, settings: SupervisionSettings, enabled: Bool, createdAt: Date = Date()) {
        self.name = name
        self.settings = settings
        self.enabled = enabled
        self.since = createdAt
        backoff = RestartBackoff(initial: settings.backoffInitial, maximum: settings.backoffMax,
                                 stablePeriod: settings.stablePeriod)
        intensity = RestartIntensity(maxRestarts: settings.maxRestarts, window: settings.restartWindow)
    }

    /// The state shown to operators.
    public var state: ServiceState {
        switch phase {
        case .stopped: return .stopped
        case .starting: return .starting
        case .running: return .running
        case .stopping: return .stopping
        case .backoff: return .backoff
        case .failed: return .failed
        }
    }

    /// The instance the machine is responsible for (starting, running or being stopped gracefully).
    public var currentInstance: Instance? {
        switch phase {
        case .starting(let instance), .running(let instance), .stopping(let instance, _): return instance
        case .stopped, .backoff, .failed: return nil
        }
    }

    /// The running instance, the one operators' faults and pings apply to.
    public var runningInstance: Instance? {
        if case .running(let instance) = phase { return instance }
        return nil
    }

    // MARK: - The one entry point

    /// Applies one input. Throws only for operator requests the current state refuses; the state is then
    /// unchanged.
    public mutating func handle(_ input: Input, at now: Moment) throws(SupervisorError) -> [Effect] {
        switch input {
        case .start(let cause):
            return try start(cause, at: now)
        case .restart:
            return try restart(at: now)
        case .stop(let reason):
            return stop(reason: reason, then: .stay(reason: reason), at: now)
        case .hostShutdown(let reason):
            closing = true
            return stop(reason: reason, then: .stay(reason: reason), at: now)
        case .setEnabled(let wanted, let reason):
            guard wanted != enabled else { return [] }
            enabled = wanted
            guard wanted else { return stop(reason: reason, then: .stay(reason: reason), at: now) }
            guard !closing else { return [] }
            switch phase {
            case .stopping(let instance, .stay(let stopReason)):
                // Enabled while a stop drains: it starts again once the stop is over.
                phase = .stopping(instance, then: .start(stopReason: stopReason, startReason: reason))
                return []
            case .starting, .running, .stopping:
                return []
            case .stopped, .backoff, .failed:
                return launch(reason: reason, at: now)
            }
        case .settingsChanged(let new):
            settings = new
            backoff.initial = new.backoffInitial
            backoff.maximum = max(new.backoffMax, new.backoffInitial)
            backoff.stablePeriod = new.stablePeriod
            intensity.maxRestarts = new.maxRestarts
            intensity.window = new.restartWindow
            return []

        case .ready(let number):
            guard case .starting(var instance) = phase, instance.number == number else { return [] }
            instance.lastPong = now.instant
            return transition(to: .running(instance), reason: "ready", at: now)
        case .failed(let number, let reason):
            guard let instance = liveInstance(number) else { return [] }
            return fail(instance, reason: reason, hung: false, cause: .thrown, at: now)
        case .ended(let number, let end):
            guard let instance = liveInstance(number) else { return [] }
            if let failure = end.failureReason {
                return fail(instance, reason: failure, hung: false, end: end, cause: RestartCause(end), at: now)
            }
            let uptime = now.instant - instance.startedAt
            if settings.restartPolicy.restarts(afterFailure: false) {
                return scheduleRestart(uptime: uptime, reason: "exited", at: now)
            }
            return transition(to: .stopped, reason: "exited", at: now)
        case .stopFinished(let number, let abandoned):
            guard case .stopping(let instance, let then) = phase, instance.number == number else { return [] }
            let suffix = abandoned ? "; instance did not stop and was abandoned" : ""
            switch then {
            case .stay(let reason):
                return transition(to: .stopped, reason: reason + suffix, at: now)
            case .start(let stopReason, let startReason):
                let stopped = transition(to: .stopped, reason: stopReason + suffix, at: now)
                return closing ? stopped : stopped + launch(reason: startReason, at: now)
            }
        case .peerFailed(let reason):
            switch phase {
            case .starting(let instance), .running(let instance):
                lastFailure = FailureRecord(reason: reason, at: now.date)
                return [.dispose(instance: instance.number, hung: false, gracePeriod: settings.shutdownTimeout)]
                    + recover(uptime: now.instant - instance.startedAt, reason: reason, cause: .sharedFate, at: now)
            case .stopping, .stopped, .backoff, .failed:
                return []
            }

        case .tick:
            guard case .running(var instance) = phase else { return [] }
            if let sent = instance.pingSentAt {
                guard now.instant - sent > settings.livenessTimeout else { return [] }
                return fail(instance, reason: "hung: no answer to a liveness ping within \(settings.livenessTimeout.milliseconds) ms",
                            hung: true, cause: .hang, at: now)
            }
            guard now.instant - instance.lastPong >= settings.livenessInterval else { return [] }
            instance.pingSentAt = now.instant
            phase = .running(instance)
            return [.ping(instance: instance.number)]
        case .pingAnswered(let number):
            guard case .running(var instance) = phase, instance.number == number else { return [] }
            instance.pingSentAt = nil
            instance.lastPong = now.instant
            phase = .running(instance)
            return []
        case .startupDeadline(let number):
            guard case .starting(let instance) = phase, instance.number == number else { return [] }
            return fail(instance, reason: "startup timeout: not ready after \(settings.startupTimeout.milliseconds) ms",
                        hung: false, cause: .startupTimeout, at: now)
        case .restartDue(let token):
            guard case .backoff(token) = phase, !closing else { return [] }
            return launch(reason: "restart after backoff", at: now)
        }
    }

    // MARK: - Operator requests

    private mutating func start(_ cause: StartCause, at now: Moment) throws(SupervisorError) -> [Effect] {
        guard !closing else { throw .shuttingDown }
        switch cause {
        case .hostStarted:
            guard enabled, currentInstance == nil else { return [] }
            return launch(reason: "host started", at: now)
        case .operator:
            switch phase {
            case .starting, .running, .stopping:
                throw .alreadyRunning(name, state: state)
            case .stopped, .failed, .backoff:
                enabled = true
                backoff.reset()
                intensity.reset()
                return launch(reason: "started by operator", at: now)
            }
        }
    }

    private mutating func restart(at now: Moment) throws(SupervisorError) -> [Effect] {
        guard !closing else { throw .shuttingDown }
        enabled = true
        // A stop, then a start: the history is forgotten as a start forgets it.
        backoff.reset()
        intensity.reset()
        let stopReason = "restart requested by operator"
        let startReason = "restarted by operator"
        switch phase {
        case .starting, .running:
            return stop(reason: stopReason, then: .start(stopReason: stopReason, startReason: startReason), at: now)
        case .stopping(let instance, _):
            phase = .stopping(instance, then: .start(stopReason: stopReason, startReason: startReason))
            return []
        case .backoff, .failed:
            return transition(to: .stopped, reason: stopReason, at: now) + launch(reason: startReason, at: now)
        case .stopped:
            return launch(reason: startReason, at: now)
        }
    }

    private mutating func stop(reason: String, then: AfterStop, at now: Moment) -> [Effect] {
        switch phase {
        case .starting(let instance), .running(let instance):
            let recorded = transition(to: .stopping(instance, then: then), reason: reason, at: now)
            return recorded + [.stop(instance: instance.number, gracePeriod: settings.shutdownTimeout)]
        case .stopping(let instance, _):
            // A stop asked for while another drains (an operator's restart, say) wins: nothing starts after it.
            phase = .stopping(instance, then: then)
            return []
        case .stopped:
            return []
        case .backoff:
            return transition(to: .stopped, reason: reason, at: now)
        case .failed:
            // A failed service stays failed at a host shutdown (the record shows why it was down);
            // an operator's stop makes it stopped.
            return closing ? [] : transition(to: .stopped, reason: reason, at: now)
        }
    }

    // MARK: - Instances

    private mutating func launch(reason: String, at now: Moment) -> [Effect] {
        guard !closing else { return [] }
        instanceNumber += 1
        let instance = Instance(number: instanceNumber, startedAt: now.instant, pingSentAt: nil, lastPong: now.instant)
        return transition(to: .starting(instance), reason: reason, at: now) + [
            .launch(instance: instance.number),
            .armStartupTimer(instance: instance.number, after: settings.startupTimeout),
        ]
    }

    /// The current instance numbered `number`, if it is starting or running (a stopping instance's
    /// failure or end is the graceful stop's business).
    private func liveInstance(_ number: Int) -> Instance? {
        switch phase {
        case .starting(let instance) where instance.number == number, .running(let instance) where instance.number == number:
            return instance
        default:
            return nil
        }
    }

    /// The failure path: the failed instance is disposed of, and the service restarted or given up on
    /// according to its policy and intensity.
    private mutating func fail(_ instance: Instance, reason: String, hung: Bool, end: InstanceEnd? = nil,
                               cause: RestartCause, at now: Moment) -> [Effect] {
        lastFailure = FailureRecord(reason: reason, at: now.date, signal: end?.signalName, exitStatus: end?.exitStatus)
        return [.instanceFailed(instance: instance.number, reason: reason),
                .dispose(instance: instance.number, hung: hung, gracePeriod: settings.shutdownTimeout)]
            + recover(uptime: now.instant - instance.startedAt, reason: reason, cause: cause, at: now)
    }

    private mutating func recover(uptime: Duration, reason: String, cause: RestartCause, at now: Moment) -> [Effect] {
        guard !closing else { return transition(to: .stopped, reason: reason, at: now) }
        guard settings.restartPolicy.restarts(afterFailure: true) else {
            return transition(to: .failed, reason: "\(reason); not restarted (\(settings.restartPolicy.rawValue))", at: now)
        }
        // The intensity limits a service's own failures: going down with a failed peer (shared isolation)
        // is counted as a restart, but must not mark this service failed, or end the host, for failures
        // that are the peer's — whose own intensity rules on them.
        guard cause == .sharedFate || intensity.admit(at: now.instant) else {
            let limit = "more than \(settings.maxRestarts) restarts in \(settings.restartWindow.milliseconds / 1000) s"
            let failed = transition(to: .failed, reason: "\(reason); \(limit)", at: now)
            return settings.onMaxRestarts == .escalate ? failed + [.escalate(reason: limit)] : failed
        }
        restarts += 1
        restartsByCause[cause, default: 0] += 1
        return scheduleRestart(uptime: uptime, reason: reason, at: now)
    }

    private mutating func scheduleRestart(uptime: Duration, reason: String, at now: Moment) -> [Effect] {
        let delay = backoff.nextDelay(afterUptime: uptime)
        nextRestartToken += 1
        let token = nextRestartToken
        let recorded = transition(to: .backoff(token: token), reason: "\(reason); restarting in \(delay.milliseconds) ms", at: now)
        if delay == .zero { return recorded + launch(reason: "restart after failure", at: now) }
        return recorded + [.armRestartTimer(token: token, after: delay)]
    }

    private mutating func transition(to next: Phase, reason: String, at now: Moment) -> [Effect] {
        let from = state
        phase = next
        since = now.date
        return [.record(from: from, to: state, instance: instanceNumber, reason: reason)]
    }
}

/// How an instance ended, as its runner saw it.
public enum InstanceEnd: Sendable, Equatable {
    /// `run` returned: a normal end.
    case returned
    /// `run` threw.
    case threw(reason: String)
    /// A worker process exited with this status.
    case exited(status: Int32)
    /// A worker process was ended by this signal.
    case signaled(signal: Int32)

    public var signalName: String? {
        if case .signaled(let signal) = self { return SignalName.of(signal) }
        return nil
    }

    public var exitStatus: Int32? {
        if case .exited(let status) = self { return status }
        return nil
    }

    /// Why the end counts as a failure; `nil` for a normal end.
    public var failureReason: String? {
        switch self {
        case .returned, .exited(status: 0): return nil
        case .threw(let reason): return reason
        case .exited(let status): return "worker exited with status \(status)"
        case .signaled(let signal): return "worker exited on signal \(SignalName.of(signal))"
        }
    }
}

/// Signal names as operators know them (`SIGSEGV`), for records and reasons.
public enum SignalName {
    public static func of(_ signal: Int32) -> String {
        let names: [Int32: String] = [
            1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
            9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
            16: "SIGSTKFLT", 17: "SIGCHLD", 18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU",
            23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH", 29: "SIGIO",
            30: "SIGPWR", 31: "SIGSYS",
        ]
        return names[signal] ?? "signal \(signal)"
    }
}
