import Foundation

/// One failure of one instance, as the host keeps it (`<state-dir>/crashes/<id>/record.json`) and as
/// `inetinfoctl crashes show ID --json` prints it: what died, how, and what its connections had sent.
public struct CrashRecord: Codable, Sendable, Equatable {
    public struct Connection: Codable, Sendable, Equatable {
        /// `ADDR:PORT` (`[ADDR]:PORT` for IPv6).
        public var peer: String
        /// Its input was being processed when the instance died: the likely cause.
        public var suspect: Bool
        public var bytesIn: UInt64
        public var bytesOut: UInt64
        public var openedAt: Date
        public var lastInputAt: Date?
        /// The last bytes it sent (at most 4 KiB), base64 in JSON.
        public var lastInput: Data

        public init(peer: String, suspect: Bool, bytesIn: UInt64, bytesOut: UInt64, openedAt: Date, lastInputAt: Date?,
                    lastInput: Data) {
            self.peer = peer
            self.suspect = suspect
            self.bytesIn = bytesIn
            self.bytesOut = bytesOut
            self.openedAt = openedAt
            self.lastInputAt = lastInputAt
            self.lastInput = lastInput
        }

        /// The peer's address without its port: what the quarantine keys on.
        public var address: String { CrashRecord.address(ofPeer: peer) }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(peer, forKey: .peer)
            try container.encode(suspect, forKey: .suspect)
            try container.encode(bytesIn, forKey: .bytesIn)
            try container.encode(bytesOut, forKey: .bytesOut)
            try container.encode(openedAt, forKey: .openedAt)
            try container.encode(lastInputAt, forKey: .lastInputAt)
            try container.encode(lastInput, forKey: .lastInput)
        }
    }

    public var id: String
    public var service: String
    public var instance: Int
    /// The process that ran the instance (the host's own in the in-process modes).
    public var pid: Int32?
    /// The signal that ended the process (`"SIGSEGV"`), `null` if none did.
    public var signal: String?
    /// The status the process exited with, `null` if it did not exit.
    public var exitStatus: Int32?
    public var reason: String
    public var at: Date
    /// How long the instance had run.
    public var uptimeSeconds: Double?
    /// The Swift runtime's crash report, as the process wrote it (see docs/operations.md); `null` if none.
    public var backtrace: String?
    /// The service's last state changes before the record was written, oldest first.
    public var events: [EventRecord]
    /// The connections open when the instance died, the suspect first.
    public var connections: [Connection]
    /// Open connections the record leaves out (a record keeps at most ``maximumConnections``).
    public var connectionsOmitted: Int

    public static let maximumConnections = 64

    public init(id: String, service: String, instance: Int, pid: Int32?, signal: String?, exitStatus: Int32?, reason: String,
                at: Date, uptimeSeconds: Double?, backtrace: String?, events: [EventRecord], connections: [Connection],
                connectionsOmitted: Int) {
        self.id = id
        self.service = service
        self.instance = instance
        self.pid = pid
        self.signal = signal
        self.exitStatus = exitStatus
        self.reason = reason
        self.at = at
        self.uptimeSeconds = uptimeSeconds
        self.backtrace = backtrace
        self.events = events
        self.connections = connections
        self.connectionsOmitted = connectionsOmitted
    }

    /// The connection whose input was being processed, if one was.
    public var suspect: Connection? { connections.first(where: \.suspect) }

    public var summary: CrashSummary {
        CrashSummary(id: id, service: service, instance: instance, pid: pid, signal: signal, exitStatus: exitStatus,
                     reason: reason, at: at, suspect: suspect?.peer, connections: connections.count + connectionsOmitted)
    }

    /// `127.0.0.2:5000` → `127.0.0.2`, `[::1]:5000` → `::1`.
    public static func address(ofPeer peer: String) -> String {
        if peer.hasPrefix("["), let end = peer.firstIndex(of: "]") {
            return String(peer[peer.index(after: peer.startIndex)..<end])
        }
        guard let colon = peer.lastIndex(of: ":") else { return peer }
        return String(peer[..<colon])
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(service, forKey: .service)
        try container.encode(instance, forKey: .instance)
        try container.encode(pid, forKey: .pid)
        try container.encode(signal, forKey: .signal)
        try container.encode(exitStatus, forKey: .exitStatus)
        try container.encode(reason, forKey: .reason)
        try container.encode(at, forKey: .at)
        try container.encode(uptimeSeconds, forKey: .uptimeSeconds)
        try container.encode(backtrace, forKey: .backtrace)
        try container.encode(events, forKey: .events)
        try container.encode(connections, forKey: .connections)
        try container.encode(connectionsOmitted, forKey: .connectionsOmitted)
    }
}

/// One line of `inetinfoctl crashes --json`.
public struct CrashSummary: Codable, Sendable, Equatable {
    public var id: String
    public var service: String
    public var instance: Int
    public var pid: Int32?
    public var signal: String?
    public var exitStatus: Int32?
    public var reason: String
    public var at: Date
    /// The suspect's `ADDR:PORT`, `null` when no input was being processed.
    public var suspect: String?
    /// Connections open at the crash.
    public var connections: Int

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(service, forKey: .service)
        try container.encode(instance, forKey: .instance)
        try container.encode(pid, forKey: .pid)
        try container.encode(signal, forKey: .signal)
        try container.encode(exitStatus, forKey: .exitStatus)
        try container.encode(reason, forKey: .reason)
        try container.encode(at, forKey: .at)
        try container.encode(suspect, forKey: .suspect)
        try container.encode(connections, forKey: .connections)
    }
}

/// One quarantined address (`inetinfoctl quarantine list --json`, `status --json`).
public struct QuarantineEntry: Codable, Sendable, Equatable {
    public var address: String
    public var since: Date
    public var until: Date
    /// The crash records that put it there.
    public var crashes: [String]

    public init(address: String, since: Date, until: Date, crashes: [String]) {
        self.address = address
        self.since = since
        self.until = until
        self.crashes = crashes
    }
}
