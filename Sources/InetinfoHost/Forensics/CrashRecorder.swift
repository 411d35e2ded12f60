import Foundation
import HostControl
import Logging
import NIOConcurrencyHelpers
import Supervision

/// Turns every failure of an instance into a crash record: what died, how, the Swift runtime's crash
/// report, and the connections it had open — from the instance's flight recorder, the one whose input
/// was being processed marked as the suspect. A suspect's address is a strike for the quarantine.
///
/// Contract: the flight recorder is read the moment the supervisor reports the failure (before a hung
/// instance is killed, while a thrown one closes its connections under a frozen recorder); the record
/// is written once the instance has ended (for its signal or exit status and its crash report), or
/// ``endAllowance`` later without them. The host removes an instance's flight recorder file once the
/// instance has ended and its failure, if any, is recorded; a file found at start was left by a host that
/// died, and becomes a record of its own (``recordLeftovers()``).
final class CrashRecorder: InstanceObserver {
    /// How long a record waits for the failed instance to end.
    static let endAllowance = Duration.seconds(15)
    /// State changes of the service kept in a record.
    static let eventsKept = 20

    let store: CrashStore
    let flightRecorders: FlightRecorderDirectory
    private let quarantine: QuarantineBook
    private let events: EventLog
    private let logger: Logger
    // Guards the instances ("service.instance") whose failure is being recorded: their flight recorder
    // files are the record's to remove, not the end's.
    private let inFlight = NIOLockedValueBox<Set<String>>([])

    init(store: CrashStore, flightRecorders: FlightRecorderDirectory, quarantine: QuarantineBook, events: EventLog,
         logger: Logger) {
        self.store = store
        self.flightRecorders = flightRecorders
        self.quarantine = quarantine
        self.events = events
        self.logger = logger
    }

    func instanceFailed(_ failure: InstanceFailureReport) {
        let at = Date()
        let path = flightRecorders.file(service: failure.service, instance: failure.instance)
        // Only the failed instance's own file counts (a worker could write another's).
        let recording = FlightRecording.read(path: path).flatMap {
            $0.service == failure.service && $0.instance == failure.instance ? $0 : nil
        }
        let key = "\(failure.service).\(failure.instance)"
        inFlight.withLockedValue { _ = $0.insert(key) }
        Task.detached { [self] in
            // The thread that crashed or reported the failure names its connection. A hang has no such
            // thread: its suspect is a connection whose processing has not moved between two looks. Any
            // other end (an exit, a kill from outside) accuses no one.
            var suspect = recording?.suspect
            if let recording, recording.failingThread == nil, failure.hung {
                try? await Task.sleep(for: Self.hangSecondLook)
                suspect = FlightRecording.read(path: path).flatMap { Self.stuck(in: recording, and: $0) }
            }
            var end: InstanceEnd?
            if let handle = failure.handle { end = await Self.end(of: handle, within: Self.endAllowance) }
            let record = makeRecord(failure: failure, at: at, end: end, crashReport: end == nil ? nil : failure.handle?.crashReport,
                                    recording: recording, suspect: suspect)
            save(record)
            inFlight.withLockedValue { _ = $0.remove(key) }
            // An instance that did not end (abandoned) may still write its file; its end removes it.
            if end != nil || failure.handle == nil { unlink(path) }
        }
    }

    /// How long after a hang's first look the second comes: a connection that a healthy thread processes is
    /// done within microseconds, one that hangs its thread is still there, unchanged.
    static let hangSecondLook = Duration.milliseconds(50)

    /// The connection processed by the same thread, with the same input, in both looks.
    static func stuck(in first: FlightRecording, and second: FlightRecording) -> FlightRecording.Connection? {
        first.connections.first { before in
            before.processing && second.connections.contains {
                $0.peer == before.peer && $0.openedAt == before.openedAt && $0.processingThread == before.processingThread
                    && $0.bytesIn == before.bytesIn
            }
        }
    }

    func instanceEnded(service: String, instance: Int) {
        guard !inFlight.withLockedValue({ $0.contains("\(service).\(instance)") }) else { return }
        unlink(flightRecorders.file(service: service, instance: instance))
    }

    /// Records what a host that died left behind: the flight recorders of the instances it ran (in the
    /// in-process modes, with the connections that were open when it died). Call before any instance
    /// starts: then every file there is a previous host's.
    func recordLeftovers() {
        for path in flightRecorders.files() {
            defer { unlink(path) }
            guard let recording = FlightRecording.read(path: path) else { continue }
            let at = Date()
            let how = recording.pid == recording.hostPid ? "the host process (pid \(recording.hostPid)) ended while this instance ran"
                : "the host process (pid \(recording.hostPid)) of this worker (pid \(recording.pid)) ended while it ran"
            let failure = InstanceFailureReport(service: recording.service, instance: recording.instance, reason: how, handle: nil)
            // Only a crash of one of its threads names a suspect: a host killed from outside accuses no one.
            var record = makeRecord(failure: failure, at: at, end: nil, crashReport: nil, recording: recording,
                                    suspect: recording.suspect)
            record.events = []
            save(record)
        }
    }

    /// The host is stopping on purpose: the records still waiting for their instance's end are written
    /// (within `timeout`), and no flight recorder left is a crash.
    func finish(within timeout: Duration = .seconds(3)) async {
        let deadline = ContinuousClock.now + timeout
        while !inFlight.withLockedValue({ $0.isEmpty }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        // A record that is still pending keeps its file: the next start records it instead.
        let pending = inFlight.withLockedValue { $0 }
        for path in flightRecorders.files() where !pending.contains(where: { path.hasSuffix("/\($0).flight") }) {
            unlink(path)
        }
    }

    private func save(_ record: CrashRecord) {
        do {
            try store.write(record)
            logger.notice("crash recorded", metadata: [
                "crash": "\(record.id)", "service": "\(record.service)", "instance": "\(record.instance)",
                "suspect": "\(record.suspect?.peer ?? "none")",
            ])
        } catch {
            logger.error("cannot write a crash record", metadata: ["crash": "\(record.id)", "error": "\(error)"])
        }
        // A strike needs an address (the file that named it may have been written by a subverted worker).
        if let suspect = record.suspect, IPAddressText.isValid(suspect.address) {
            quarantine.strike(suspect.address, crash: record.id, at: record.at)
        }
    }

    private func makeRecord(failure: InstanceFailureReport, at: Date, end: InstanceEnd?, crashReport: String?,
                            recording: FlightRecording?, suspect: FlightRecording.Connection?) -> CrashRecord {
        func isSuspect(_ connection: FlightRecording.Connection) -> Bool {
            connection.peer == suspect?.peer && connection.openedAt == suspect?.openedAt
        }
        let open = (recording?.connections ?? []).sorted { lhs, rhs in
            if isSuspect(lhs) != isSuspect(rhs) { return isSuspect(lhs) }
            return (lhs.lastInputAt ?? lhs.openedAt) > (rhs.lastInputAt ?? rhs.openedAt)
        }
        let kept = open.prefix(CrashRecord.maximumConnections).map { connection in
            CrashRecord.Connection(peer: connection.peer, suspect: isSuspect(connection), bytesIn: connection.bytesIn,
                                   bytesOut: connection.bytesOut, openedAt: connection.openedAt,
                                   lastInputAt: connection.lastInputAt, lastInput: Data(connection.lastInput))
        }
        let history = events.history.filter { $0.service == failure.service }.suffix(Self.eventsKept).map {
            EventRecord(time: $0.time, offsetMs: $0.offsetMs, service: $0.service, instance: $0.instance, from: $0.from,
                        to: $0.to, reason: $0.reason)
        }
        return CrashRecord(
            id: store.makeID(at: at, service: failure.service, instance: failure.instance),
            service: failure.service, instance: failure.instance,
            pid: failure.handle?.pid ?? recording?.pid,
            signal: end?.signalName, exitStatus: end?.exitStatus, reason: failure.reason, at: at,
            uptimeSeconds: recording.map { max(0, at.timeIntervalSince($0.startedAt)) },
            backtrace: crashReport, events: Array(history), connections: Array(kept),
            connectionsOmitted: open.count - kept.count)
    }

    /// The instance's end, or `nil` if it has not ended `timeout` later (the wait does not outlive it).
    private static func end(of handle: any InstanceHandle, within timeout: Duration) async -> InstanceEnd? {
        await withCheckedContinuation { (continuation: CheckedContinuation<InstanceEnd?, Never>) in
            let resumed = NIOLockedValueBox(false)
            let resume: @Sendable (InstanceEnd?) -> Void = { end in
                let first = resumed.withLockedValue { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: end) }
            }
            Task { resume(await handle.ended()) }
            Task {
                try? await Task.sleep(for: timeout)
                resume(nil)
            }
        }
    }
}

/// Whether a text is an IPv4 or IPv6 address, as the quarantine keys on them.
enum IPAddressText {
    static func isValid(_ text: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }
}
