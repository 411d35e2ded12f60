/// One assignment of the sd_notify(3) protocol. Several are sent together as newline-separated lines.
public enum NotifyState: Sendable, Equatable {
    /// Startup finished: every enabled service runs (Type=notify units become "active").
    case ready
    /// A one-line, human-readable summary shown by `systemctl status` and `StatusText`.
    case status(String)
    /// Keep-alive ping for `WatchdogSec=`.
    case watchdog
    /// Ask systemd to act as if the watchdog timer had expired.
    case watchdogTrigger
    /// The host began its shutdown.
    case stopping
    /// The host began reloading its configuration. systemd ≥ 253 requires `MONOTONIC_USEC` with it.
    case reloading(monotonicUsec: UInt64)
    /// The host failed with this errno-style code.
    case errno(Int32)
    /// Ask for more time for the current start, reload or stop.
    case extendTimeout(usec: UInt64)

    /// The text of the assignment as sd_notify(3) expects it.
    public var line: String {
        switch self {
        case .ready: return "READY=1"
        case .status(let text):
            // A newline would end the assignment early and start a bogus one.
            let oneLine = text.split(whereSeparator: \.isNewline).joined(separator: " ")
            return "STATUS=\(oneLine)"
        case .watchdog: return "WATCHDOG=1"
        case .watchdogTrigger: return "WATCHDOG=trigger"
        case .stopping: return "STOPPING=1"
        case .reloading(let usec): return "RELOADING=1\nMONOTONIC_USEC=\(usec)"
        case .errno(let code): return "ERRNO=\(code)"
        case .extendTimeout(let usec): return "EXTEND_TIMEOUT_USEC=\(usec)"
        }
    }
}
