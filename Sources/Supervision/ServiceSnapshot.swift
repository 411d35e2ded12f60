import Foundation

/// The last failure of a service.
public struct FailureRecord: Sendable, Codable, Equatable {
    public var reason: String
    public var at: Date
    /// The signal that ended a worker process (`SIGSEGV`), if one did.
    public var signal: String?
    /// The status a worker process exited with, if it exited.
    public var exitStatus: Int32?

    public init(reason: String, at: Date, signal: String? = nil, exitStatus: Int32? = nil) {
        self.reason = reason
        self.at = at
        self.signal = signal
        self.exitStatus = exitStatus
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
    /// The process that runs the current instance; `nil` when none runs.
    public var pid: Int32?
}
