import Foundation

/// One state change of a service: the unit of the event log (`inetinfoctl events`).
public struct SupervisorEvent: Sendable, Codable, Equatable {
    /// Wall-clock time of the change.
    public var time: Date
    /// Milliseconds since the supervisor started; readable timelines do not depend on the wall clock.
    public var offsetMs: Int64
    public var service: String
    /// The instance number the change concerns (each start of a service is a new instance).
    public var instance: Int
    public var from: ServiceState
    public var to: ServiceState
    public var reason: String

    public init(time: Date, offsetMs: Int64, service: String, instance: Int, from: ServiceState, to: ServiceState, reason: String) {
        self.time = time
        self.offsetMs = offsetMs
        self.service = service
        self.instance = instance
        self.from = from
        self.to = to
        self.reason = reason
    }
}
