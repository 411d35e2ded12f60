import NIOConcurrencyHelpers
import NIOCore

/// Whether the supervisor itself is fit to vouch for the host, as the systemd watchdog pinger asks.
///
/// Healthy means: the supervisor's own loop ticked recently, and no more hung instances have been
/// abandoned than the limit allows (their threads stay blocked; past the limit only a restart of the
/// whole process frees them, so the outer tier must take over).
///
/// This is the one definition of "healthy": the watchdog pinger, `status` and the systemd `STATUS=` line
/// all ask ``problem()``.
public final class SupervisorHealth: Sendable {
    private struct State {
        var lastTick: NIODeadline = .now()
        var abandoned = 0
        var maxAbandoned: Int
    }

    // Guards the tick time and the abandoned count, written by the supervisor, read by the pinger.
    private let state: NIOLockedValueBox<State>
    /// A tick older than this means the supervisor's loop is stuck.
    public let maxTickAge: TimeAmount

    init(maxAbandoned: Int, maxTickAge: TimeAmount) {
        state = NIOLockedValueBox(State(maxAbandoned: maxAbandoned))
        self.maxTickAge = maxTickAge
    }

    /// How old the supervisor's last tick may be for a host whose systemd watchdog interval is
    /// `watchdogMicroseconds`: a quarter of it, and at least a second (the supervisor ticks at least
    /// every 250 ms, so a second without one is already four missed ticks).
    public static func maxTickAge(watchdogMicroseconds: UInt64?) -> TimeAmount {
        // A day is more than any watchdog means, and keeps the conversion from overflowing.
        let quarter = Int64(clamping: min(watchdogMicroseconds ?? 0, 86_400_000_000)) / 4
        return .microseconds(max(1_000_000, quarter))
    }

    /// Whether the host counts as degraded: some enabled service is failed, or the supervisor is not healthy.
    public static func isDegraded(_ services: [ServiceSnapshot], supervisorProblem: String?) -> Bool {
        supervisorProblem != nil || services.contains { $0.enabled && $0.state == .failed }
    }

    func tick() { state.withLockedValue { $0.lastTick = .now() } }
    func recordAbandoned() { state.withLockedValue { $0.abandoned += 1 } }
    /// An abandoned instance ended after all (its threads came back): it no longer counts.
    func abandonedEnded() { state.withLockedValue { $0.abandoned -= 1 } }
    func setMaxAbandoned(_ limit: Int) { state.withLockedValue { $0.maxAbandoned = limit } }

    /// Instances given up on because they did not stop, and still not ended.
    public var abandonedInstances: Int { state.withLockedValue { $0.abandoned } }

    /// Why the supervisor is not healthy, or `nil` when it is.
    public func problem() -> String? {
        state.withLockedValue { state in
            let age = NIODeadline.now() - state.lastTick
            if age > maxTickAge {
                return "supervisor loop has not run for \(age.nanoseconds / 1_000_000) ms"
            }
            if state.abandoned > state.maxAbandoned {
                return "\(state.abandoned) hung instances abandoned (limit \(state.maxAbandoned))"
            }
            return nil
        }
    }
}
