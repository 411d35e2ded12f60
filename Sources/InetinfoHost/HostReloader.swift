import Logging
import Supervision
import Systemd

/// Re-reads the configuration (SIGHUP, `inetinfoctl reload`) and applies what can change while
/// running: supervision settings and which services are enabled. Listen addresses, the state
/// directory and the isolation mode take effect on the next start; a reload that changes them says so.
actor HostReloader {
    private let options: HostOptions
    /// The configuration the host started with: what listens, where state lives, the isolation mode — the
    /// settings a reload cannot change, which every reload compares with (not with the last reload's).
    private let running: HostConfiguration
    private let supervisor: Supervisor
    private let quarantine: QuarantineBook
    private let notifier: SystemdNotifier
    private let logger: Logger
    private let environment: [String: String]
    /// Services that have sockets (enabled at start); only these can be enabled by a reload.
    private let startable: Set<String>

    init(options: HostOptions, configuration: HostConfiguration, supervisor: Supervisor, quarantine: QuarantineBook,
         notifier: SystemdNotifier,
         environment: [String: String], startable: Set<String>, logger: Logger) {
        self.options = options
        running = configuration
        self.supervisor = supervisor
        self.quarantine = quarantine
        self.notifier = notifier
        self.environment = environment
        self.startable = startable
        self.logger = logger
    }

    /// Returns a summary of what changed, or throws why the new configuration was rejected (the old one stays).
    func reload() async throws -> String {
        _ = try? notifier.notify(.reloading(monotonicUsec: SystemdNotifier.monotonicMicroseconds()), .status("reloading"))
        let result: Result<String, any Error>
        do {
            result = .success(try await apply())
        } catch {
            result = .failure(error)
        }
        // READY=1 ends the reload for systemd, and STATUS= goes back to the services' summary (it said
        // "reloading"; the status reporter only sends one when a service changes state).
        // Published, not asked of the supervisor's loop: a wedged one would hold READY=1 back.
        let services = supervisor.latestSnapshot()
        _ = try? notifier.notify(.ready, .status(StatusReporter.summary(services, problem: supervisor.health.problem())))
        return try result.get()
    }

    private func apply() async throws -> String {
        let new: HostConfiguration
        do {
            new = try HostConfiguration(values: try options.values(), catalog: ServiceCatalog.entries, environment: environment)
        } catch {
            logger.error("reload rejected; keeping the running configuration", metadata: ["error": "\(error)"])
            throw error
        }
        var notes: [String] = []
        var enabled: [String: Bool] = [:]
        for (name, service) in new.services {
            if service.enabled, !startable.contains(name) {
                notes.append("\(name) cannot be enabled without a restart (it has no socket)")
                continue
            }
            enabled[name] = service.enabled
            if service.listen != running.services[name]?.listen { notes.append("\(name).listen changes on restart") }
        }
        if new.isolation != running.isolation { notes.append("host.isolation changes on restart") }
        if new.stateDirectory != running.stateDirectory { notes.append("host.state-dir changes on restart") }
        if new.adminListen != running.adminListen || new.adminAllowRemote != running.adminAllowRemote {
            notes.append("admin.listen and admin.allow-remote change on restart")
        }
        await supervisor.apply(settings: new.services.mapValues(\.supervision), enabled: enabled)
        await supervisor.setMaxAbandoned(new.maxAbandoned)
        quarantine.update(settings: new.quarantine)
        let summary = notes.isEmpty ? "configuration reloaded" : "configuration reloaded; " + notes.joined(separator: "; ")
        logger.notice("configuration reloaded", metadata: ["notes": "\(notes)"])
        return summary
    }
}
