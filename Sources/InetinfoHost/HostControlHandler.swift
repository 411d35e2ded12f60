import Foundation
import HostControl
import Logging
import Supervision

/// Answers control-socket requests from the supervisor's state.
struct HostControlHandler: ControlHandler {
    let supervisor: Supervisor
    let reloader: HostReloader
    let isolation: IsolationMode
    /// `nil` when fault injection is disabled.
    let faults: FaultInjector?
    let crashes: CrashStore
    let quarantine: QuarantineBook
    let watchdogUsec: UInt64?
    /// The admin listener's address, if it runs.
    let admin: String?
    /// `/metrics`, when the host keeps metrics (the `metrics` command prints the same).
    let metrics: MetricsExposition?
    let started: ContinuousClock.Instant
    /// Services that have sockets (enabled at start): only these can be started (a reload says the same).
    let startable: Set<String>
    let logger: Logger

    /// A service disabled when the host started has no listening socket: started, it would run and listen
    /// on nothing, reported as running. (Unknown names are left to the supervisor, which lists the known ones.)
    private func requireSocket(_ name: String) throws {
        guard !startable.contains(name), supervisor.latestSnapshot().contains(where: { $0.name == name }) else { return }
        throw HandlerError("\(name) cannot be started without a restart of the host: it was disabled when the host started, so it has no socket")
    }

    func handle(_ request: ControlRequest) async -> ControlReply {
        do {
            switch request.command {
            case .status:
                return ControlReply(ok: true, status: try await status(only: request.service))
            case .start:
                try requireSocket(try required(request.service))
                try await supervisor.startService(try required(request.service))
                return .done("\(request.service!) starting")
            case .stop:
                try await supervisor.stopService(try required(request.service))
                return .done("\(request.service!) stopped")
            case .restart:
                try requireSocket(try required(request.service))
                try await supervisor.restartService(try required(request.service))
                return .done("\(request.service!) restarted")
            case .crash:
                return try await crash(service: try required(request.service), mode: request.mode ?? Fault.throw.rawValue)
            case .reload:
                return .done(try await reloader.reload())
            case .events:
                return .failure("events are streamed; this reply should not happen")
            case .metrics:
                guard let metrics else {
                    throw HandlerError("the host keeps no metrics: they are kept when the admin listener runs (admin.listen, docs/operations.md)")
                }
                return .done(String(decoding: metrics.exposition(), as: UTF8.self))
            case .crashes:
                guard let id = request.id else { return ControlReply(ok: true, crashes: crashes.summaries()) }
                guard let record = crashes.load(id: id) else { throw HandlerError("no crash record '\(id)' (list them with: inetinfoctl crashes)") }
                return ControlReply(ok: true, crash: record)
            case .quarantine:
                switch request.action ?? "list" {
                case "list":
                    return ControlReply(ok: true, quarantine: quarantine.entries())
                case "release":
                    guard let address = request.address, !address.isEmpty else { throw HandlerError("release needs an address") }
                    guard quarantine.release(address) else { throw HandlerError("\(address) is not quarantined") }
                    return .done("\(address) released from quarantine")
                case let action:
                    throw HandlerError("unknown quarantine action '\(action)' (use list or release)")
                }
            }
        } catch {
            return .failure("\(error)")
        }
    }

    func events(follow: Bool) -> AsyncStream<EventRecord> {
        let (history, updates) = supervisor.events.subscribe()
        return AsyncStream { continuation in
            let task = Task {
                for event in history { continuation.yield(Self.record(event)) }
                if follow {
                    for await event in updates { continuation.yield(Self.record(event)) }
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    private func required(_ service: String?) throws -> String {
        guard let service, !service.isEmpty else { throw HandlerError("this command needs a service name") }
        return service
    }

    private func status(only name: String?) async throws -> HostStatus {
        // What the supervisor published after its last input, not a question to its loop: a wedged
        // supervisor (whose problem `status` is there to show) would never answer one.
        let all = supervisor.latestSnapshot()
        var services = all
        if let name {
            guard let service = all.first(where: { $0.name == name }) else {
                throw SupervisorError.unknownService(name, known: all.map(\.name))
            }
            services = [service]
        }
        let problem = supervisor.health.problem()
        let host = HostInfo(
            pid: getpid(),
            uptimeSeconds: Double((ContinuousClock.now - started).components.seconds),
            isolation: isolation.rawValue,
            watchdogUsec: watchdogUsec,
            faultInjection: faults != nil,
            degraded: SupervisorHealth.isDegraded(all, supervisorProblem: problem),
            supervisorProblem: problem, admin: admin)
        return HostStatus(host: host, services: services.map(Self.status), quarantine: quarantine.entries())
    }

    private func crash(service: String, mode: String) async throws -> ControlReply {
        guard let faults else {
            throw HandlerError("fault injection is disabled on this host; start inetinfo with --enable-fault-injection to allow crash")
        }
        guard let fault = Fault(rawValue: mode) else {
            throw HandlerError("unknown crash mode '\(mode)' (use \(Fault.names))")
        }
        if service == "host" {
            return .done(try faults.injectIntoHost(fault, supervisor: supervisor))
        }
        try await faults.inject(fault, into: service, of: supervisor)
        return .done("\(mode) injected into \(service)")
    }

    static func status(_ snapshot: ServiceSnapshot) -> ServiceStatus {
        let figures = snapshot.pid.flatMap(ChildProcess.figures(of:))
        return ServiceStatus(name: snapshot.name, state: snapshot.state, instance: snapshot.instance,
                             restarts: snapshot.restarts, since: snapshot.since, listen: snapshot.listen,
                             lastFailure: snapshot.lastFailure.map {
                                 FailureInfo(reason: $0.reason, at: $0.at, signal: $0.signal, exitStatus: $0.exitStatus)
                             },
                             enabled: snapshot.enabled, pid: snapshot.pid, rssBytes: figures?.rssBytes,
                             cpuSeconds: figures?.cpuSeconds)
    }

    static func record(_ event: SupervisorEvent) -> EventRecord {
        EventRecord(time: event.time, offsetMs: event.offsetMs, service: event.service, instance: event.instance,
                    from: event.from, to: event.to, reason: event.reason)
    }
}

struct HandlerError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
