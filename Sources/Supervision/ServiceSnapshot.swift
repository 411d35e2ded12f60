import Foundation

/// The last failure of a service.
public struct FailureRecord: Sendable, Codable, Equatable {
    public var reason: String
    public var at: Date
    public init(reason: String, at: Date) {
        self.reason = reason
        self.at = at
    }
}

/// What the supervisor knows about one service at one moment.
public struct ServiceSnapshot: Sendable, Codable, Equatable {
    public var name: String
    public var state: ServiceState
    public var instance: Int
    /// Restarts after failures: the service's own, or (shared isolation) another service's.
    public var restarts: Int
    public var since: Date
    public var listen: [String]
    public var lastFailure: FailureRecord?
    public var enabled: Bool
}
