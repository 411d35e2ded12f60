/// Exponential restart delay with a cap, reset once an instance has run for a stable period.
///
/// The first restart after a stable run waits `initial`; each further one doubles, up to `maximum`.
public struct RestartBackoff: Sendable, Equatable {
    public var initial: Duration
    public var maximum: Duration
    /// An instance that ran at least this long before failing starts the sequence again.
    public var stablePeriod: Duration
    private var current: Duration?

    public init(initial: Duration, maximum: Duration, stablePeriod: Duration) {
        self.initial = initial
        self.maximum = max(maximum, initial)
        self.stablePeriod = stablePeriod
    }

    /// The delay before the next restart of an instance that ran for `uptime`.
    public mutating func nextDelay(afterUptime uptime: Duration) -> Duration {
        if uptime >= stablePeriod { current = nil }
        let delay: Duration
        if let current {
            delay = min(current * 2, maximum)
        } else {
            delay = initial
        }
        current = delay == .zero ? nil : delay
        return delay
    }

    /// Forgets the sequence, as after an operator's explicit start.
    public mutating func reset() { current = nil }
}
