import Foundation

/// An instance the supervisor started and has not yet let go of.
struct RunningInstance: Sendable {
    let context: InstanceContext
    let task: Task<Void, Never>
    let startedAt: ContinuousClock.Instant
    /// When the unanswered liveness ping was sent; `nil` when none is outstanding.
    var pingSentAt: ContinuousClock.Instant?
    var lastPong: ContinuousClock.Instant

    init(context: InstanceContext, task: Task<Void, Never>, startedAt: ContinuousClock.Instant) {
        self.context = context
        self.task = task
        self.startedAt = startedAt
        self.lastPong = startedAt
    }
}

/// The supervisor's record of one service. Confined to the ``Supervisor`` actor.
final class ServiceSlot {
    let service: any HostedService
    let sockets: [ListeningSocket]
    private(set) var settings: SupervisionSettings
    var enabled: Bool
    var state: ServiceState = .stopped
    var since = Date()
    var instanceNumber = 0
    var restarts = 0
    var lastFailure: FailureRecord?
    var current: RunningInstance?
    var backoff: RestartBackoff
    var intensity: RestartIntensity
    var pendingRestart: Task<Void, Never>?
    /// Fault injection: the next instance reports ready only after its startup timeout.
    var nextInstanceIsSlow = false

    init(_ registration: ServiceRegistration) {
        service = registration.service
        sockets = registration.sockets
        settings = registration.settings
        enabled = registration.enabled
        backoff = RestartBackoff(initial: settings.backoffInitial, maximum: settings.backoffMax,
                                 stablePeriod: settings.stablePeriod)
        intensity = RestartIntensity(maxRestarts: settings.maxRestarts, window: settings.restartWindow)
    }

    func update(settings new: SupervisionSettings) {
        settings = new
        backoff.initial = new.backoffInitial
        backoff.maximum = max(new.backoffMax, new.backoffInitial)
        backoff.stablePeriod = new.stablePeriod
        intensity.maxRestarts = new.maxRestarts
        intensity.window = new.restartWindow
    }
}
