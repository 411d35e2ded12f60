import Foundation
import Supervision

/// Human-readable `status` and `events` output, in the manner of `systemctl status`.
public struct StatusPresenter: Sendable {
    /// ANSI colours, only when printing to a terminal.
    public var colour: Bool

    public init(colour: Bool) {
        self.colour = colour
    }

    public func render(_ status: HostStatus) -> String {
        let host = status.host
        let dot = paint("●", status.allEnabledRunning && !host.degraded ? "32" : "31")
        let watchdog = host.watchdogUsec.map { "watchdog \(Self.duration(Double($0) / 1_000_000))" } ?? "no watchdog"
        var lines = ["\(dot) inetinfo — pid \(host.pid), up \(Self.duration(host.uptimeSeconds)), \(host.isolation) isolation, \(watchdog)"
            + (host.faultInjection ? ", fault injection enabled" : "") + (host.degraded ? ", " + paint("degraded", "31") : "")]
        if let admin = host.admin { lines.append("  admin: http://\(admin)/metrics, /healthz, /readyz") }
        if let problem = host.supervisorProblem { lines.append("  supervisor: \(paint(problem, "31"))") }
        let rows = status.services.map { service -> [String] in
            [service.name, service.enabled ? service.state.rawValue : "disabled", ControlJSON.formatDate(service.since),
             String(service.instance), service.pid.map(String.init) ?? "-", String(service.restarts),
             service.listen.joined(separator: " "),
             service.lastFailure.map { "\($0.reason) (\(ControlJSON.formatDate($0.at)))" } ?? "-"]
        }
        let header = ["SERVICE", "STATE", "SINCE", "INSTANCE", "PID", "RESTARTS", "LISTEN", "LAST FAILURE"]
        let widths = (0..<header.count).map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func format(_ row: [String], stateColour: String? = nil) -> String {
            row.enumerated().map { index, cell in
                let padded = index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                if index == 1, let stateColour { return paint(padded, stateColour) }
                return padded
            }.joined(separator: "  ")
        }
        lines.append(format(header))
        for (row, service) in zip(rows, status.services) {
            lines.append(format(row, stateColour: Self.colourCode(service.enabled ? service.state : nil)))
        }
        for entry in status.quarantine {
            lines.append("  quarantined: \(paint(CrashPresenter.escaped(entry.address), "31")) until \(ControlJSON.formatDate(entry.until))"
                + " (crashes \(entry.crashes.joined(separator: ", ")))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One event as a timeline line: `+   1234 ms  smtp#2  running → backoff  injected fault: throw; …`.
    public static func line(_ event: EventRecord) -> String {
        let offset = String(event.offsetMs)
        let padded = String(repeating: " ", count: max(0, 8 - offset.count)) + offset
        return "\(ControlJSON.formatDate(event.time))  +\(padded) ms  \(event.service)#\(event.instance)  \(event.from.rawValue) → \(event.to.rawValue)  \(event.reason)"
    }

    private func paint(_ text: String, _ code: String) -> String {
        colour ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    /// `nil`: a disabled service.
    private static func colourCode(_ state: ServiceState?) -> String {
        switch state {
        case .running: return "32"
        case .failed: return "31"
        case nil, .stopped: return "2"
        case .starting, .stopping, .backoff: return "33"
        }
    }

    /// `3min 12s`, `2h 5min`: how long, as a person reads it.
    public static func duration(_ seconds: Double) -> String {
        if seconds < 1 { return "\(Int(seconds * 1000))ms" }
        let total = Int(seconds)
        if total < 60 { return "\(total)s" }
        if total < 3600 { return "\(total / 60)min \(total % 60)s" }
        if total < 86400 { return "\(total / 3600)h \(total % 3600 / 60)min" }
        return "\(total / 86400)d \(total % 86400 / 3600)h"
    }
}
