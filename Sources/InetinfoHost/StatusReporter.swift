import Logging
import ServiceLifecycle
import Supervision
import Systemd

/// Turns supervisor events into systemd notifications: `STATUS=` on every change, `READY=1` the first
/// time every enabled service runs, `STOPPING=1` when the host begins to shut down.
struct StatusReporter: Service {
    let supervisor: Supervisor
    let notifier: SystemdNotifier
    let logger: Logger

    func run() async throws {
        let (history, updates) = supervisor.events.subscribe()
        var readySent = false
        await withGracefulShutdownHandler {
            func report() async {
                let services = await supervisor.snapshot()
                var states: [NotifyState] = [.status(Self.summary(services, problem: supervisor.health.problem()))]
                if !readySent, services.allSatisfy({ !$0.enabled || $0.state == .running }) {
                    readySent = true
                    states.append(.ready)
                    logger.notice("all enabled services running; ready")
                }
                send(states)
            }
            if !history.isEmpty { await report() }
            for await _ in updates.cancelOnGracefulShutdown() { await report() }
        } onGracefulShutdown: {
            send([.stopping, .status("stopping")])
        }
    }

    private func send(_ states: [NotifyState]) {
        do {
            try notifier.notify(states)
        } catch {
            logger.warning("cannot notify systemd", metadata: ["error": "\(error)"])
        }
    }

    /// `smtp: running (2 restarts), http: running`, with `degraded` when something is failed.
    static func summary(_ services: [ServiceSnapshot], problem: String?) -> String {
        var parts = services.map { service -> String in
            var text = "\(service.name): \(service.enabled ? service.state.rawValue : "disabled")"
            if service.restarts > 0 { text += " (\(service.restarts) restart\(service.restarts == 1 ? "" : "s"))" }
            return text
        }.joined(separator: ", ")
        if SupervisorHealth.isDegraded(services, supervisorProblem: problem) { parts += "; degraded" }
        if let problem { parts += "; \(problem)" }
        return parts
    }
}
