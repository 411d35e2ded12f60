import Foundation
import HostControl
import Supervision

/// What tests ask the host, through its control socket.
extension TestHost {
    /// The fault kinds of `inetinfoctl crash` (see docs/control.md).
    public typealias Fault = HostControl.Fault

    public var client: ControlClient { ControlClient(path: controlSocket) }

    public func status() throws -> HostStatus {
        let reply = try client.send(ControlRequest(command: .status))
        guard reply.ok, let status = reply.status else { throw TestHostError(reply.error ?? "no status") }
        return status
    }

    public func service(_ name: String) throws -> ServiceStatus {
        guard let service = try status().services.first(where: { $0.name == name }) else {
            throw TestHostError("no service \(name)")
        }
        return service
    }

    /// The port a service listens on (its first listen address).
    public func port(of service: String) throws -> Int {
        guard let address = try self.service(service).listen.first, let port = Int(address.split(separator: ":").last ?? "") else {
            throw TestHostError("\(service) listens nowhere")
        }
        return port
    }

    /// Injects a fault, as `inetinfoctl crash SERVICE --mode FAULT` does.
    public func inject(_ fault: Fault, into service: String) throws {
        if fault.endsTheProcess, case .inProcess = configuration.mode {
            throw TestHostError("\(fault.rawValue) would end the test process; use a child-process host")
        }
        let reply = try client.send(ControlRequest(command: .crash, service: service, mode: fault.rawValue))
        guard reply.ok else { throw TestHostError(reply.error ?? "crash refused") }
    }

    /// Every event so far.
    public func events() throws -> [EventRecord] {
        var events: [EventRecord] = []
        try client.exchange(ControlRequest(command: .events)) { reply in
            if let event = reply.event { events.append(event) }
            return true
        }
        return events
    }

    /// Waits for an event matching `predicate`; throws with the timeline after `timeout`.
    @discardableResult
    public func waitForEvent(_ description: String, timeout: Duration = .seconds(10),
                             where predicate: (EventRecord) -> Bool) async throws -> EventRecord {
        do {
            return try await Deadline.eventually(description, timeout: timeout) { try events().first(where: predicate) }
        } catch {
            let timeline = ((try? events()) ?? []).map(StatusPresenter.line).joined(separator: "\n")
            throw TestHostError("\(error)\ntimeline:\n\(timeline)")
        }
    }

    /// Waits until `service` enters `state` (as instance `instance`, if given).
    @discardableResult
    public func waitForState(_ service: String, _ state: ServiceState, instance: Int? = nil,
                             timeout: Duration = .seconds(10)) async throws -> EventRecord {
        try await waitForEvent("\(service) \(state.rawValue)\(instance.map { " as instance \($0)" } ?? "")", timeout: timeout) {
            $0.service == service && $0.to == state && (instance == nil || $0.instance == instance)
        }
    }

    /// Waits until every enabled service runs.
    @discardableResult
    public func waitUntilRunning(timeout: Duration = .seconds(30)) async throws -> HostStatus {
        try await Deadline.eventually("all services running", timeout: timeout) {
            if let process, !process.isRunning {
                throw TestHostError("host exited with \(process.terminationStatus); log:\n\(log)")
            }
            guard let status = try? status() else { return nil }
            return status.allEnabledRunning ? status : nil
        }
    }
}
