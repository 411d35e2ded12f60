/// Why the supervisor refused a request or ended.
public enum SupervisorError: Error, CustomStringConvertible, Sendable, Equatable {
    case unknownService(String, known: [String])
    case notRunning(String, state: ServiceState)
    case alreadyRunning(String, state: ServiceState)
    case shuttingDown
    /// A service exceeded its restart intensity with the `escalate` outcome: the host must exit non-zero.
    case escalated(service: String, reason: String)

    public var description: String {
        switch self {
        case .unknownService(let name, let known):
            return "no service named '\(name)' (services: \(known.joined(separator: ", ")))"
        case .notRunning(let name, let state):
            return "\(name) is not running (it is \(state.rawValue))"
        case .alreadyRunning(let name, let state):
            return "\(name) is already \(state.rawValue)"
        case .shuttingDown:
            return "the host is shutting down"
        case .escalated(let service, let reason):
            return "\(service) exceeded its restart intensity (\(reason)); escalating to the service manager"
        }
    }
}
