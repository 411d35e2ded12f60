/// When an instance that ended is started again (Erlang/OTP child restart types).
public enum RestartPolicy: String, Sendable, Codable, CaseIterable {
    /// Always restarted, whether it failed or ended normally.
    case permanent
    /// Restarted only after a failure; a normal end leaves it stopped.
    case transient
    /// Never restarted.
    case temporary

    /// Whether an instance that ended this way is restarted.
    public func restarts(afterFailure failed: Bool) -> Bool {
        switch self {
        case .permanent: return true
        case .transient: return failed
        case .temporary: return false
        }
    }
}

/// What the supervisor does when a service exceeds its restart intensity.
public enum IntensityOutcome: String, Sendable, Codable, CaseIterable {
    /// The service stays down in `failed`; the host keeps serving the others and reports itself degraded.
    case markFailed = "mark-failed"
    /// The host exits non-zero so that the outer tier (systemd) takes over.
    case escalate
}

/// How a failure of one service affects the others.
public enum IsolationMode: String, Sendable, Codable, CaseIterable {
    /// One-for-one: only the failed service restarts.
    case isolated
    /// One-for-all: any failure restarts every service, as Windows 2000's Inetinfo.exe did.
    case shared
    /// One-for-one, with every instance in a worker process of its own (the host's runner): a crash,
    /// not only a failure Swift can throw, is contained.
    case process
}
