import CoreMetrics
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Why an instance failed, as it reported it (``InstanceContext/fail(_:)``).
public struct InstanceFailure: Error, CustomStringConvertible, Sendable, Equatable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// What one service instance gets from the supervisor, and how it talks back.
///
/// An instance serves on ``sockets``, calls ``reportReady(eventLoops:)`` once it accepts connections,
/// then waits in ``untilStopped()``. The supervisor pings the reported event loops for liveness; an
/// instance that detects its own failure calls ``fail(_:)``.
public final class InstanceContext: Sendable {
    public let service: String
    /// Counts the starts of ``service``: 1 for the first instance.
    public let number: Int
    /// The host-owned listening sockets; adopt ``ListeningSocket/duplicateForInstance()`` copies.
    public let sockets: [ListeningSocket]
    public let logger: Logger
    /// Where the instance records what its connections send (``FlightRecorder``); `nil` records nothing.
    public let flightRecorder: FlightRecorder?
    /// The peers the instance refuses at connect; `nil` refuses none.
    public let quarantine: PeerQuarantine?
    /// Where the instance counts what it does (swift-metrics); a no-op factory when the host keeps no metrics.
    public let metrics: any MetricsFactory
    /// Event loop threads started ahead of need for the service's instances; `nil`: each starts its own.
    public let spareLoops: SpareLoopGroup?

    private struct State {
        var readyReported = false
        var eventLoops: [any EventLoop] = []
        var stopRequested = false
        var failure: InstanceFailure?
        var waiters: [CheckedContinuation<Void, any Error>] = []
        var forcedStopHandlers: [@Sendable () -> Void] = []
        var forced = false
        var closeListeners: (@Sendable () -> Void)?
        var readinessDelay: Duration?
    }

    // Guards everything above: the context is touched from the supervisor, the instance's task and
    // the instance's event loops.
    private let state = NIOLockedValueBox(State())
    private let events: @Sendable (InstanceEvent) -> Void

    /// - Parameter events: where the instance's ready and failure reports go (its runner).
    public init(service: String, number: Int, sockets: [ListeningSocket], logger: Logger,
                flightRecorder: FlightRecorder? = nil, quarantine: PeerQuarantine? = nil,
                metrics: any MetricsFactory = NOOPMetricsHandler.instance, spareLoops: SpareLoopGroup? = nil,
                events: @escaping @Sendable (InstanceEvent) -> Void) {
        self.service = service
        self.number = number
        self.sockets = sockets
        self.logger = logger
        self.flightRecorder = flightRecorder
        self.quarantine = quarantine
        self.metrics = metrics
        self.spareLoops = spareLoops
        self.events = events
    }

    // MARK: called by the instance

    /// The instance accepts connections. `eventLoops` are the loops that serve it; each is pinged for
    /// liveness, and fault injection acts on them.
    public func reportReady(eventLoops: [any EventLoop]) {
        let (first, delay) = state.withLockedValue { state -> (Bool, Duration?) in
            defer { state.readyReported = true }
            state.eventLoops = eventLoops
            return (!state.readyReported, state.readinessDelay)
        }
        guard first else { return }
        if let delay {
            let events = events
            Task {
                try? await Task.sleep(for: delay)
                events(.ready)
            }
        } else {
            events(.ready)
        }
    }

    /// Fault injection (`slow-start`): the ready report reaches the supervisor only `delay` after the
    /// instance makes it. Call before the instance runs.
    @_spi(FaultInjection) public func delayReadiness(by delay: Duration) {
        state.withLockedValue { $0.readinessDelay = delay }
    }

    /// Registers how the instance's listening channels are closed: at once when the instance fails (its
    /// successor, started at once, must get every new connection: one the failed instance accepted would
    /// only be cut), and by fault injection of a dead listener.
    public func onCloseListeners(_ closeListeners: @escaping @Sendable () -> Void) {
        state.withLockedValue { $0.closeListeners = closeListeners }
    }

    /// Waits until the supervisor asks the instance to stop (returns) or the instance reported a
    /// failure (throws it). Returns at once if either already happened.
    public func untilStopped() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome = state.withLockedValue { state -> Result<Void, any Error>? in
                if let failure = state.failure { return .failure(failure) }
                if state.stopRequested { return .success(()) }
                state.waiters.append(continuation)
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    /// Reports that the instance failed. The supervisor handles it at once (even if the instance's
    /// task never returns), and ``untilStopped()`` throws it.
    public func fail(_ failure: InstanceFailure) {
        let failed = state.withLockedValue { state -> ([CheckedContinuation<Void, any Error>], (@Sendable () -> Void)?)? in
            guard state.failure == nil, !state.stopRequested else { return nil }
            state.failure = failure
            defer { state.waiters.removeAll() }
            return (state.waiters, state.closeListeners)
        }
        guard let (waiters, closeListeners) = failed else { return }
        closeListeners?()
        // The connections open now are the crash record's: keep them while the instance closes them.
        flightRecorder?.freeze()
        events(.failed(reason: failure.reason))
        waiters.forEach { $0.resume(throwing: failure) }
    }

    /// Registers work that ends the instance at once (close every connection) when the graceful stop
    /// took too long or the instance is being abandoned. Runs immediately if that already happened.
    public func onForcedStop(_ handler: @escaping @Sendable () -> Void) {
        let runNow = state.withLockedValue { state -> Bool in
            if state.forced { return true }
            state.forcedStopHandlers.append(handler)
            return false
        }
        if runNow { handler() }
    }

    /// Called by an instance just before it lets go of its event loops (shuts them down, or hands them on
    /// to a successor): from then on they are neither pinged nor used for fault injection.
    public func eventLoopsWillShutDown() {
        state.withLockedValue { $0.eventLoops = [] }
    }

    /// Whether the supervisor asked for a stop; an instance still starting checks it before serving.
    public var isStopRequested: Bool { state.withLockedValue { $0.stopRequested } }

    /// Whether the instance reported a failure.
    var hasFailed: Bool { state.withLockedValue { $0.failure != nil } }

    // MARK: called by the runner and by fault injection

    /// Whether the instance reported event loops that still run.
    @_spi(FaultInjection) public var hasEventLoops: Bool { state.withLockedValue { !$0.eventLoops.isEmpty } }

    /// Closes the instance's listeners as if they had died; `false` if it registered no way to.
    @_spi(FaultInjection) public func closeListeners() -> Bool {
        guard let close = state.withLockedValue({ $0.closeListeners }) else { return false }
        close()
        return true
    }

    /// Runs `body` with the instance's event loops, holding the lock so that they cannot be shut down
    /// meanwhile (scheduling work on a loop that has shut down is an error).
    @_spi(FaultInjection) public func withLiveEventLoops<Result>(_ body: ([any EventLoop]) -> Result) -> Result {
        state.withLockedValue { body($0.eventLoops) }
    }

    public func requestStop() {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, any Error>] in
            state.stopRequested = true
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    public func forceStop() {
        requestStop()
        let handlers = state.withLockedValue { state -> [@Sendable () -> Void] in
            guard !state.forced else { return [] }
            state.forced = true
            defer { state.forcedStopHandlers.removeAll() }
            return state.forcedStopHandlers
        }
        handlers.forEach { $0() }
    }
}
