/// At most `maxRestarts` restarts in any window of `window` (Erlang/OTP's intensity and period,
/// systemd's StartLimitBurst and StartLimitIntervalSec).
public struct RestartIntensity: Sendable, Equatable {
    public var maxRestarts: Int
    public var window: Duration
    /// Restart times inside the current window, oldest first.
    private var recent: [ContinuousClock.Instant] = []

    public init(maxRestarts: Int, window: Duration) {
        self.maxRestarts = maxRestarts
        self.window = window
    }

    /// Records a restart at `now`. Returns `false` when it would exceed the intensity; it is then not recorded.
    public mutating func admit(at now: ContinuousClock.Instant) -> Bool {
        recent.removeAll { now - $0 >= window }
        guard recent.count < maxRestarts else { return false }
        recent.append(now)
        return true
    }

    /// Restarts counted in the window that ends at `now`.
    public func count(at now: ContinuousClock.Instant) -> Int {
        recent.filter { now - $0 < window }.count
    }

    public mutating func reset() { recent.removeAll() }
}
