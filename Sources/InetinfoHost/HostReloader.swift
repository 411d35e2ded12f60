import Logging
import Supervision
import Systemd

/// Re-reads the configuration (SIGHUP, `inetinfoctl reload`) and applies what can change while
/// running: supervision settings and which services are enabled. Listen addresses, the state
/// directory and the isolation mode take effect on the next start; a reload that changes them says so.
actor HostReloader {
    private let options: HostOptions
    private var configuration: HostConfiguration
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
        self.configuration = configuration
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
        defer { _ = try? notifier.notify(.ready) }
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
            if service.listen != configuration.services[name]?.listen { notes.append("\(name).listen changes on restart") }
        }
        if new.isolation != configuration.isolation { notes.append("host.isolation changes on restart") }
        if new.stateDirectory != configuration.stateDirectory { notes.append("host.state-dir changes on restart") }
        if new.adminListen != configuration.adminListen || new.adminAllowRemote != configuration.adminAllowRemote {
            notes.append("admin.listen and admin.allow-remote change on restart")
        }
        await supervisor.apply(settings: new.services.mapValues(\.supervision), enabled: enabled)
        await supervisor.setMaxAbandoned(new.maxAbandoned)
        quarantine.update(settings: new.quarantine)
        configuration = new
        let summary = notes.isEmpty ? "configuration reloaded" : "configuration reloaded; " + notes.joined(separator: "; ")
        logger.notice("configuration reloaded", metadata: ["notes": "\(notes)"])
        return summary
    }
}
