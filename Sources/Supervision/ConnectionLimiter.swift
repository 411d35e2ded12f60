import NIOConcurrencyHelpers

/// Counts the open connections of a service across its instances, so that a limit holds through restarts.
public final class ConnectionLimiter: Sendable {
    public let limit: Int
    // Guards the number of open connections.
    private let count = NIOLockedValueBox(0)

    public init(limit: Int) { self.limit = limit }

    /// Takes a slot; `false` when the limit is reached (the caller refuses the connection).
    public func enter() -> Bool {
        count.withLockedValue { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    /// Gives a slot back; call once for every successful ``enter()``.
    public func leave() { count.withLockedValue { $0 -= 1 } }
}
