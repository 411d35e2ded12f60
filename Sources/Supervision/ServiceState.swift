/// The states of a supervised service, as the control plane shows them.
public enum ServiceState: String, Sendable, Codable, CaseIterable {
    case starting, running, stopping, stopped, backoff, failed
}
