import CoreMetrics
import Logging
import NIOCore
import ServiceLifecycle
import Supervision
import Systemd

/// Sends `WATCHDOG=1` at half the systemd watchdog interval, but only while the supervisor vouches
/// for itself: a wedged supervisor loop or too many abandoned instances stop the pings, and systemd
/// restarts the host.
struct WatchdogPinger: Service {
    let intervalMicroseconds: UInt64
    let health: SupervisorHealth
    let notifier: SystemdNotifier
    /// `inetinfo_watchdog_pings_total`, when the host keeps metrics.
    let pings: Counter?
    let logger: Logger

    func run() async throws {
        // WATCHDOG_USEC comes from the environment: a day is more than any watchdog means, and keeps the
        // conversions to nanoseconds below from overflowing whatever the variable says.
        let interval = Int64(clamping: min(intervalMicroseconds, 86_400_000_000))
        let period = Duration.microseconds(interval / 2)
        _ = try? await cancelWhenGracefulShutdown {
            var withheld = false
            while !Task.isCancelled {
                if let problem = health.problem() {
                    if !withheld {
                        logger.critical("withholding systemd watchdog pings", metadata: ["reason": "\(problem)"])
                        withheld = true
                    }
                } else {
                    if withheld { logger.notice("supervisor healthy again; resuming watchdog pings") }
                    withheld = false
                    do {
                        try notifier.notify(.watchdog)
                        pings?.increment()
                    } catch {
                        logger.warning("cannot send watchdog ping", metadata: ["error": "\(error)"])
                    }
                }
                try await Task.sleep(for: period)
            }
        }
    }
}
