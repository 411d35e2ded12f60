/// A failure injected on purpose (`inetinfoctl crash SERVICE --mode FAULT`), for tests and demonstrations.
/// The one list of fault names: the control protocol, the host and the test kit use it.
public enum Fault: String, Sendable, Codable, CaseIterable {
    /// The instance reports an error: a failure the supervisor contains.
    case `throw`
    /// Every event loop of the instance blocks forever: detected by the liveness ping; the instance is
    /// abandoned (its threads stay blocked) and replaced.
    case hang
    /// Every event loop blocks for three liveness timeouts, then goes on: detected and replaced like a
    /// hang, after which the abandoned instance finishes tearing itself down (a thread stuck in a slow
    /// system call, say). Leaves nothing behind, so it suits long chaos runs.
    case stall
    /// The instance's listening channels close under it ("a listener that died").
    case listener
    /// The instance fails, and its replacement reports ready only after its startup timeout has passed.
    case slowStart = "slow-start"
    /// The instance traps (`fatalError`): the process that runs it dies.
    case trap
    /// A real invalid memory access (SIGSEGV): the process that runs the instance dies.
    case segv
    /// `abort()` (SIGABRT): the process that runs the instance dies.
    case abort
    /// The process that runs the instance exits with status 1.
    case exit

    /// Whether the fault ends the process that runs the instance (the host itself, in the in-process modes).
    public var endsTheProcess: Bool {
        switch self {
        case .trap, .segv, .abort, .exit: return true
        case .throw, .hang, .stall, .listener, .slowStart: return false
        }
    }

    /// `throw, hang, …`, for messages that list the choices.
    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}
