/// What failed, when a service is restarted after a failure: the label operators count restarts by
/// (`inetinfo_service_restarts_total{cause}`), one word each.
public enum RestartCause: String, Sendable, Codable, CaseIterable, Hashable {
    /// The instance threw, or reported its own failure (a worker's report included).
    case thrown
    /// No answer to a liveness ping in time.
    case hang
    /// A worker process ended by a signal (a segfault, a trap, an abort, a kill).
    case signal
    /// A worker process exited with a non-zero status.
    case exit
    /// Not ready within the startup timeout.
    case startupTimeout = "startup-timeout"
    /// Shared isolation: another service failed, and this one went down with it.
    case sharedFate = "shared-fate"

    init(_ end: InstanceEnd) {
        switch end {
        case .returned, .threw: self = .thrown
        case .exited: self = .exit
        case .signaled: self = .signal
        }
    }
}
