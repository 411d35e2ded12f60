import Glibc

/// A failure injected on purpose (`inetinfoctl crash`), for tests and demonstrations.
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
    /// The instance traps (`fatalError`): the whole process dies; only systemd can recover it.
    case trap
}

/// What injected faults do to a thread.
enum FaultActions {
    /// What a hung thread does: never return. The thread is lost; see ``SupervisorHealth``.
    static func blockForever() -> Never {
        while true { sleep(3600) }
    }

    /// A transient hang: the thread is stuck, then comes back.
    static func block(for duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 { request = remaining }
    }
}
