import CSystemd
import Glibc

/// Sends sd_notify(3) messages to the service manager through libsystemd.
///
/// Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op: libsystemd returns 0 and nothing is sent.
public struct SystemdNotifier: Sendable {
    public init() {}

    /// Sends the given assignments in one datagram.
    /// - Returns: `true` when a message was sent, `false` outside systemd.
    /// - Throws: ``SystemdError`` when libsystemd reports a failure.
    @discardableResult
    public func notify(_ states: NotifyState...) throws -> Bool {
        try notify(states)
    }

    @discardableResult
    public func notify(_ states: [NotifyState]) throws -> Bool {
        let message = states.map(\.line).joined(separator: "\n")
        let result = sd_notify(0, message)
        if result < 0 {
            throw SystemdError(operation: "sd_notify(\(message.prefix(40)))", errno: -result)
        }
        return result > 0
    }

    /// The monotonic clock in microseconds, as `RELOADING=1` wants it in `MONOTONIC_USEC`.
    public static func monotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
    }
}
