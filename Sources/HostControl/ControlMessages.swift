import Foundation
import Supervision

/// The commands of the control socket; `inetinfoctl` has one subcommand per case.
public enum ControlCommand: String, Codable, Sendable {
    case status, start, stop, restart, crash, events, reload
    /// The crash records: all of them (summaries), or the one named by `id` in full.
    case crashes
    /// The quarantine: `action` `list` (the default) or `release` (of `address`).
    case quarantine
    /// `/metrics` (the Prometheus exposition) in `message`, when the host keeps metrics.
    case metrics
}

/// One request: a JSON object on one line.
public struct ControlRequest: Codable, Sendable, Equatable {
    public var command: ControlCommand
    /// The service a command is about (`host` for `crash host`).
    public var service: String?
    /// The fault kind of `crash`: `throw`, `hang` or `trap`.
    public var mode: String?
    /// For `events`: keep the connection open and send events as they happen.
    public var follow: Bool?
    /// For `crashes`: the record to show.
    public var id: String?
    /// For `quarantine`: `list` or `release`.
    public var action: String?
    /// For `quarantine release`: the address to release.
    public var address: String?

    public init(command: ControlCommand, service: String? = nil, mode: String? = nil, follow: Bool? = nil, id: String? = nil,
                action: String? = nil, address: String? = nil) {
        self.command = command
        self.service = service
        self.mode = mode
        self.follow = follow
        self.id = id
        self.action = action
        self.address = address
    }
}

/// One reply line. A request gets exactly one, except `events`, which gets one per event.
public struct ControlReply: Codable, Sendable, Equatable {
    public var ok: Bool
    /// What went wrong, in words a person can act on.
    public var error: String?
    /// What was done, for commands that change something.
    public var message: String?
    public var status: HostStatus?
    public var event: EventRecord?
    /// `crashes`: every record's summary, oldest first.
    public var crashes: [CrashSummary]?
    /// `crashes` with an id: that record.
    public var crash: CrashRecord?
    /// `quarantine list`.
    public var quarantine: [QuarantineEntry]?

    public init(ok: Bool, error: String? = nil, message: String? = nil, status: HostStatus? = nil, event: EventRecord? = nil,
                crashes: [CrashSummary]? = nil, crash: CrashRecord? = nil, quarantine: [QuarantineEntry]? = nil) {
        self.ok = ok
        self.error = error
        self.message = message
        self.status = status
        self.event = event
        self.crashes = crashes
        self.crash = crash
        self.quarantine = quarantine
    }

    public static func failure(_ error: String) -> ControlReply { ControlReply(ok: false, error: error) }
    public static func done(_ message: String) -> ControlReply { ControlReply(ok: true, message: message) }
}

/// `status --json`: the schema outside tools rely on (see docs/control.md).
public struct HostStatus: Codable, Sendable, Equatable {
    public var host: HostInfo
    public var services: [ServiceStatus]
    /// The addresses refused at connect, oldest first.
    public var quarantine: [QuarantineEntry]

    public init(host: HostInfo, services: [ServiceStatus], quarantine: [QuarantineEntry] = []) {
        self.host = host
        self.services = services
        self.quarantine = quarantine
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        host = try container.decode(HostInfo.self, forKey: .host)
        services = try container.decode([ServiceStatus].self, forKey: .services)
        quarantine = try container.decodeIfPresent([QuarantineEntry].self, forKey: .quarantine) ?? []
    }

    /// Whether every enabled service runs (`status` exits 0 then, 3 otherwise).
    public var allEnabledRunning: Bool {
        services.allSatisfy { !$0.enabled || $0.state == .running }
    }
}

public struct HostInfo: Codable, Sendable, Equatable {
    public var pid: Int32
    public var uptimeSeconds: Double
    public var isolation: String
    /// The systemd watchdog interval, `null` when no watchdog is armed.
    public var watchdogUsec: UInt64?
    public var faultInjection: Bool
    /// Some enabled service is failed, or the supervisor is unhealthy.
    public var degraded: Bool
    /// Why the systemd watchdog is not being pinged, `null` when it is (or none is armed).
    public var supervisorProblem: String?
    /// Where the admin listener (`/metrics`, `/healthz`, `/readyz`) listens, `null` when it is off.
    public var admin: String?

    public init(pid: Int32, uptimeSeconds: Double, isolation: String, watchdogUsec: UInt64?, faultInjection: Bool,
                degraded: Bool, supervisorProblem: String?, admin: String? = nil) {
        self.pid = pid
        self.uptimeSeconds = uptimeSeconds
        self.isolation = isolation
        self.watchdogUsec = watchdogUsec
        self.faultInjection = faultInjection
        self.degraded = degraded
        self.supervisorProblem = supervisorProblem
        self.admin = admin
    }

    // Absent values are written as `null`, not left out: the schema has every key.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(pid, forKey: .pid)
        try container.encode(uptimeSeconds, forKey: .uptimeSeconds)
        try container.encode(isolation, forKey: .isolation)
        try container.encode(watchdogUsec, forKey: .watchdogUsec)
        try container.encode(faultInjection, forKey: .faultInjection)
        try container.encode(degraded, forKey: .degraded)
        try container.encode(supervisorProblem, forKey: .supervisorProblem)
        try container.encode(admin, forKey: .admin)
    }
}

public struct FailureInfo: Codable, Sendable, Equatable {
    public var reason: String
    public var at: Date
    /// The signal that ended a worker process (`"SIGSEGV"`), `null` otherwise.
    public var signal: String?
    /// The status a worker process exited with, `null` otherwise.
    public var exitStatus: Int32?

    public init(reason: String, at: Date, signal: String? = nil, exitStatus: Int32? = nil) {
        self.reason = reason
        self.at = at
        self.signal = signal
        self.exitStatus = exitStatus
    }

    // Absent values are written as `null`: the schema has every key.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(reason, forKey: .reason)
        try container.encode(at, forKey: .at)
        try container.encode(signal, forKey: .signal)
        try container.encode(exitStatus, forKey: .exitStatus)
    }
}

public struct ServiceStatus: Codable, Sendable, Equatable {
    public var name: String
    public var state: ServiceState
    public var instance: Int
    public var restarts: Int
    public var since: Date
    public var listen: [String]
    public var lastFailure: FailureInfo?
    public var enabled: Bool
    /// The process serving the service: its worker's in process isolation, the host's otherwise; `null`
    /// when no instance runs.
    public var pid: Int32?
    public var rssBytes: Int64?
    public var cpuSeconds: Double?

    public init(name: String, state: ServiceState, instance: Int, restarts: Int, since: Date, listen: [String],
                lastFailure: FailureInfo?, enabled: Bool, pid: Int32? = nil, rssBytes: Int64? = nil,
                cpuSeconds: Double? = nil) {
        self.name = name
        self.state = state
        self.instance = instance
        self.restarts = restarts
        self.since = since
        self.listen = listen
        self.lastFailure = lastFailure
        self.enabled = enabled
        self.pid = pid
        self.rssBytes = rssBytes
        self.cpuSeconds = cpuSeconds
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(pid, forKey: .pid)
        try container.encode(rssBytes, forKey: .rssBytes)
        try container.encode(cpuSeconds, forKey: .cpuSeconds)
        try container.encode(name, forKey: .name)
        try container.encode(state, forKey: .state)
        try container.encode(instance, forKey: .instance)
        try container.encode(restarts, forKey: .restarts)
        try container.encode(since, forKey: .since)
        try container.encode(listen, forKey: .listen)
        try container.encode(lastFailure, forKey: .lastFailure)
        try container.encode(enabled, forKey: .enabled)
    }
}

/// One supervisor event on the wire (`events --json`).
public struct EventRecord: Codable, Sendable, Equatable {
    public var time: Date
    public var offsetMs: Int64
    public var service: String
    public var instance: Int
    public var from: ServiceState
    public var to: ServiceState
    public var reason: String

    public init(time: Date, offsetMs: Int64, service: String, instance: Int, from: ServiceState, to: ServiceState, reason: String) {
        self.time = time
        self.offsetMs = offsetMs
        self.service = service
        self.instance = instance
        self.from = from
        self.to = to
        self.reason = reason
    }
}

/// The JSON conventions of the control protocol: ISO 8601 dates, one object per line.
public enum ControlJSON {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(formatDate(date))
        }
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = parseDate(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not ISO 8601: \(text)"))
            }
            return date
        }
        return decoder
    }

    /// ISO 8601 with milliseconds, UTC: `2026-11-29T04:24:21.123Z`.
    public static func formatDate(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }

    public static func parseDate(_ text: String) -> Date? {
        if let date = try? Date(text, strategy: .iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted)) {
            return date
        }
        return try? Date(text, strategy: .iso8601)
    }
}
