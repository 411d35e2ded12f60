import NIOConcurrencyHelpers

/// Counts the open connections of a service across its instances, in all and per client address, so that
/// the limits hold through restarts and one client cannot take every slot.
public final class ConnectionLimiter: Sendable {
    public enum Admission: Sendable, Equatable {
        case admitted
        /// The service's own limit is reached.
        case serviceFull
        /// This client address holds its share of connections already.
        case clientFull
    }

    public let limit: Int
    public let perClientLimit: Int
    private struct Counts {
        var total = 0
        /// Open connections by peer address (without the port); an address leaves the table at zero, so
        /// it holds at most `limit` entries.
        var byClient: [String: Int] = [:]
    }
    // Guards the counts; every event loop of every instance admits connections.
    private let counts = NIOLockedValueBox(Counts())

    public init(limit: Int, perClientLimit: Int? = nil) {
        self.limit = limit
        self.perClientLimit = perClientLimit ?? limit
    }

    /// Takes a slot for a connection from `client` (its address, nil when unknown); the caller refuses the
    /// connection unless the answer is `.admitted`, and calls ``leave(client:)`` once for every admission.
    public func enter(client: String?) -> Admission {
        counts.withLockedValue { counts in
            guard counts.total < limit else { return .serviceFull }
            if let client {
                let held = counts.byClient[client, default: 0]
                guard held < perClientLimit else { return .clientFull }
                counts.byClient[client] = held + 1
            }
            counts.total += 1
            return .admitted
        }
    }

    public func leave(client: String?) {
        counts.withLockedValue { counts in
            counts.total -= 1
            guard let client, let held = counts.byClient[client] else { return }
            counts.byClient[client] = held > 1 ? held - 1 : nil
        }
    }

    /// Open connections, in all and from `client`.
    public func count(client: String? = nil) -> Int {
        counts.withLockedValue { counts in client.map { counts.byClient[$0] ?? 0 } ?? counts.total }
    }
}
