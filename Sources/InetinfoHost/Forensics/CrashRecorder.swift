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
    private let startedAt: ContinuousClock.Instant
    private let logger: Logger
    // Guards the instances ("service.instance") whose failure is being recorded: their flight recorder
    // files are the record's to remove, not the end's.
    private let inFlight = NIOLockedValueBox<Set<String>>([])

    init(store: CrashStore, flightRecorders: FlightRecorderDirectory, quarantine: QuarantineBook, events: EventLog,
         startedAt: ContinuousClock.Instant, logger: Logger) {
        self.store = store
        self.flightRecorders = flightRecorders
        self.quarantine = quarantine
        self.events = events
        self.startedAt = startedAt
        self.logger = logger
    }

    func instanceFailed(_ failure: InstanceFailureReport) {
        let at = Date()
        let path = flightRecorders.file(service: failure.service, instance: failure.instance)
        let recording = FlightRecording.read(path: path)
        let key = "\(failure.service).\(failure.instance)"
        inFlight.withLockedValue { _ = $0.insert(key) }
        Task.detached { [self] in
            var end: InstanceEnd?
            if let handle = failure.handle { end = await Self.end(of: handle, within: Self.endAllowance) }
            let record = makeRecord(failure: failure, at: at, end: end, crashReport: end == nil ? nil : failure.handle?.crashReport,
                                    recording: recording)
            save(record)
            inFlight.withLockedValue { _ = $0.remove(key) }
            // An instance that did not end (abandoned) may still write its file; its end removes it.
            if end != nil || failure.handle == nil { unlink(path) }
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
            let at = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? Date()
            let how = recording.pid == recording.hostPid ? "the host process (pid \(recording.hostPid)) ended while this instance ran"
                : "the host process (pid \(recording.hostPid)) of this worker (pid \(recording.pid)) ended while it ran"
            let failure = InstanceFailureReport(service: recording.service, instance: recording.instance, reason: how, handle: nil)
            var record = makeRecord(failure: failure, at: at, end: nil, crashReport: nil, recording: recording)
            record.events = []
            save(record)
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
        if let suspect = record.suspect { quarantine.strike(suspect.address, crash: record.id, at: record.at) }
    }

    private func makeRecord(failure: InstanceFailureReport, at: Date, end: InstanceEnd?, crashReport: String?,
                            recording: FlightRecording?) -> CrashRecord {
        let open = (recording?.connections ?? []).sorted { lhs, rhs in
            if lhs.processing != rhs.processing { return lhs.processing }
            return (lhs.lastInputAt ?? lhs.openedAt) > (rhs.lastInputAt ?? rhs.openedAt)
        }
        let kept = open.prefix(CrashRecord.maximumConnections).map { connection in
            CrashRecord.Connection(peer: connection.peer, suspect: connection.processing, bytesIn: connection.bytesIn,
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
