/// A failure injected on purpose (`inetinfoctl crash`), for tests and demonstrations.
public enum Fault: String, Sendable, Codable, CaseIterable {
    /// The instance reports an error: a failure the supervisor contains.
    case `throw`
    /// Every event loop of the instance blocks forever: detected by the liveness ping.
    case hang
    /// The instance traps (`fatalError`): the whole process dies; only systemd can recover it.
    case trap
}
