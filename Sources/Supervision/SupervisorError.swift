/// Why the supervisor refused a request or ended.
public enum SupervisorError: Error, CustomStringConvertible, Sendable, Equatable {
    case unknownService(String, known: [String])
    case notRunning(String, state: ServiceState)
    case alreadyRunning(String, state: ServiceState)
    case shuttingDown
    /// The service's instances registered no way to apply this fault (e.g. `listener` without listeners).
    case unsupportedFault(String, fault: Fault)
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
        case .unsupportedFault(let name, let fault):
            return "\(name) does not support the fault '\(fault.rawValue)'"
        case .escalated(let service, let reason):
            return "\(service) exceeded its restart intensity (\(reason)); escalating to the service manager"
        }
    }
}
