import Foundation
import HostControl

/// `status --watch`: the status again every `interval`, with what changed in between as rates (restarts
/// per minute; messages and requests per second when the host keeps metrics). On a terminal the screen is
/// redrawn in place, as `top` and `watch` do; otherwise each refresh prints one line per service, for logs
/// and pipes. A host that cannot be reached is reported and asked again at the next refresh.
struct StatusWatch {
    let socket: SocketOption
    let service: String?
    let interval: Double

    /// What one refresh saw.
    private struct Reading {
        var at: Date
        var status: HostStatus
        var metrics: MetricSamples?
    }

    func run() -> Never {
        let terminal = isatty(STDOUT_FILENO) == 1
        let colour = terminal && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
        var previous: Reading?
        while true {
            let now = Date()
            var text: String
            do {
                let reading = try read(at: now)
                text = terminal ? screen(reading, previous: previous, colour: colour) : lines(reading, previous: previous)
                previous = reading
            } catch let refusal as WatchError where refusal.description.hasPrefix("no service named") {
                // The host answered that it has no such service: asking again changes nothing.
                fail(refusal.description)
            } catch {
                text = "\(ControlJSON.formatDate(now))  host not reachable: \(error)\n"
            }
            // Home, then clear to the end of the screen: the new frame replaces the old without a blank flash.
            print(terminal ? "\u{1B}[H" + text + "\u{1B}[J" : text, terminator: "")
            fflush(nil)
            Thread.sleep(forTimeInterval: interval)
        }
    }

    private func read(at now: Date) throws -> Reading {
        let client = socket.client()
        let reply = try client.send(ControlRequest(command: .status, service: service))
        guard reply.ok, let status = reply.status else { throw WatchError(reply.error ?? "the host sent no status") }
        var metrics: MetricSamples?
        if status.host.admin != nil, let text = try? client.send(ControlRequest(command: .metrics)).message {
            metrics = MetricSamples(exposition: text)
        }
        return Reading(at: now, status: status, metrics: metrics)
    }

    /// The rates of one service between two readings: restarts per minute, and its traffic per second.
    private func rates(of service: ServiceStatus, _ reading: Reading, previous: Reading?) -> [(value: String, unit: String)] {
        guard let previous, let before = previous.status.services.first(where: { $0.name == service.name }) else { return [] }
        let seconds = reading.at.timeIntervalSince(previous.at)
        guard seconds > 0 else { return [] }
        // A host restarted in between counts from 0 again: no negative rates.
        var rates = [(String(format: "%.1f", Double(max(service.restarts - before.restarts, 0)) * 60 / seconds), "restarts/min")]
        let traffic: (name: String, unit: String)? = switch service.name {
        case "smtp": ("inetinfo_smtp_messages_accepted_total", "messages/s")
        case "http": ("inetinfo_http_requests_total", "requests/s")
        default: nil
        }
        if let traffic, let now = reading.metrics?.sum(traffic.name), let then = previous.metrics?.sum(traffic.name) {
            rates.append((String(format: "%.1f", max(now - then, 0) / seconds), traffic.unit))
        }
        return rates
    }

    private func uptime(_ service: ServiceStatus, at now: Date) -> String {
        service.state == .running ? StatusPresenter.duration(now.timeIntervalSince(service.since)) : "-"
    }

    private func screen(_ reading: Reading, previous: Reading?, colour: Bool) -> String {
        var text = StatusPresenter(colour: colour).render(reading.status)
        text += "\n"
        let rows = reading.status.services.map { service in
            [service.name, uptime(service, at: reading.at), rates(of: service, reading, previous: previous).map { "\($0.value) \($0.unit)" }.joined(separator: ", ")]
        }
        let header = ["SERVICE", "UPTIME", "RATES (since the last refresh)"]
        let widths = (0..<2).map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            text += row[0].padding(toLength: widths[0], withPad: " ", startingAt: 0) + "  "
                + row[1].padding(toLength: widths[1], withPad: " ", startingAt: 0) + "  " + row[2] + "\n"
        }
        text += "\nevery \(interval)s — \(ControlJSON.formatDate(reading.at)) — Ctrl-C to stop\n"
        // Each line ends by clearing the rest of its row: a shorter line leaves nothing of the longer one.
        return text.replacingOccurrences(of: "\n", with: "\u{1B}[K\n")
    }

    private func lines(_ reading: Reading, previous: Reading?) -> String {
        reading.status.services.map { service in
            var fields = ["\(ControlJSON.formatDate(reading.at))", service.name,
                          service.enabled ? service.state.rawValue : "disabled", "instance=\(service.instance)",
                          "restarts=\(service.restarts)", "uptime=\(uptime(service, at: reading.at))"]
            fields += rates(of: service, reading, previous: previous).map { "\($0.unit)=\($0.value)" }
            return fields.joined(separator: " ") + "\n"
        }.joined()
    }
}

struct WatchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Durations as operators write them: `90s`, `10m`, `2h`, `1d`, or seconds alone.
enum DurationText {
    static func seconds(_ text: String) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        var number = Substring(text)
        var factor = 1.0
        if let last = text.last, let unit = units[last] {
            number = number.dropLast()
            factor = unit
        }
        guard let value = Double(number), value.isFinite, value >= 0, value <= 3_650 * 86400 / factor else { return nil }
        return value * factor
    }
}
