import CSystemd

/// The watchdog settings systemd passed to this process (`WATCHDOG_USEC`, `WATCHDOG_PID`).
public enum Watchdog {
    /// The watchdog interval in microseconds, or `nil` when no watchdog is armed for this process.
    ///
    /// `sd_watchdog_enabled` returns 0 when `WATCHDOG_PID` names another process, so a shell wrapper
    /// must `exec` the host for the watchdog to count.
    public static func intervalMicroseconds() throws -> UInt64? {
        var usec: UInt64 = 0
        let result = sd_watchdog_enabled(0, &usec)
        if result < 0 { throw SystemdError(operation: "sd_watchdog_enabled", errno: -result) }
        return result > 0 && usec > 0 ? usec : nil
    }
}
