import Foundation
import HostControl
import NIOCore
import Supervision

/// The host's typed configuration. Every key is documented in docs/configuration.md.
public struct HostConfiguration: Sendable, Equatable {
    public var isolation: IsolationMode = .isolated
    public var stateDirectory: String
    public var controlSocket: String
    public var faultInjection = false
    public var logLevel = "info"
    /// Hung instances that may be abandoned before the systemd watchdog pings stop.
    public var maxAbandoned = 3
    /// Idle, already started workers kept per service in process isolation (`supervisor.spare-workers`).
    public var spareWorkers = 1
    /// Where flight recorders live: `$RUNTIME_DIRECTORY` under systemd, else `<state-dir>/run`.
    public var runtimeDirectory: String
    /// Crash records kept at most (`crashes.keep`), and their size together (`crashes.max-bytes`).
    public var crashesKeep = 100
    public var crashesMaxBytes: Int64 = 64 << 20
    /// Whether workers run the Swift runtime's backtracer when they crash (`crashes.backtrace`).
    public var crashBacktraces = true
    /// Whether instances keep a flight recorder (`crashes.flight-recorder`; off only to measure its cost).
    public var flightRecorder = true
    public var quarantine = QuarantineSettings()
    /// Where the admin listener serves `/metrics`, `/healthz` and `/readyz` (`admin.listen`); `nil`: off
    /// (unless systemd passes a socket named `admin`).
    public var adminListen: String?
    /// Whether the admin listener may listen on an address other than loopback (`admin.allow-remote`).
    public var adminAllowRemote = false
    public var services: [String: ServiceConfiguration] = [:]

    /// Per-service keys: the supervision settings (`supervisor.*` overridden by `<service>.*`),
    /// whether it runs, where it listens, and keys of the service's own.
    public struct ServiceConfiguration: Sendable, Equatable {
        public var enabled = true
        public var listen: [String]
        /// Event loop threads of each instance.
        public var threads = System.coreCount
        public var supervision = SupervisionSettings()
        /// Keys of the service's own (`http.web-root`, `smtp.simulate-ms02-012`), unparsed.
        public var options: [String: String] = [:]
    }

    /// The keys every service has; `supervisor.KEY` sets the default, `SERVICE.KEY` overrides it.
    static let supervisionKeys: Set<String> = [
        "restart-policy", "max-restarts", "restart-window", "on-max-restarts", "backoff-initial", "backoff-max",
        "stable-period", "liveness-interval", "liveness-timeout", "startup-timeout", "shutdown-timeout",
    ]
    static let hostKeys: Set<String> = ["isolation", "state-dir", "control-socket", "fault-injection", "log-level"]
    static let crashKeys: Set<String> = ["keep", "max-bytes", "backtrace", "flight-recorder"]
    static let adminKeys: Set<String> = ["listen", "allow-remote"]
    static let hostSupervisorKeys: Set<String> = [
        "max-abandoned", "spare-workers", "quarantine", "quarantine-after", "quarantine-window", "quarantine-time",
        "quarantine-allow",
    ]

    /// Builds the configuration from merged values; unknown keys and bad values are errors.
    /// - Parameter environment: `STATE_DIRECTORY` and `RUNTIME_DIRECTORY` (set by systemd) change defaults.
    public init(values: ConfigurationValues, catalog: [ServiceEntry], environment: [String: String]) throws {
        let reader = Reader(values: values)
        let knownServices = Set(catalog.map(\.name))
        for key in values.entries.keys.sorted() {
            let parts = key.split(separator: ".", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw reader.error(key, "unknown key (keys are SECTION.NAME, see docs/configuration.md)") }
            let (section, name) = (parts[0], parts[1])
            let known: Bool
            switch section {
            case "host": known = Self.hostKeys.contains(name)
            case "crashes": known = Self.crashKeys.contains(name)
            case "admin": known = Self.adminKeys.contains(name)
            case "supervisor": known = Self.supervisionKeys.contains(name) || Self.hostSupervisorKeys.contains(name)
            default:
                let entry = catalog.first { $0.name == section }
                known = knownServices.contains(section)
                    && (Self.supervisionKeys.contains(name) || ["enabled", "listen", "threads"].contains(name)
                        || entry!.options.keys.contains(name))
            }
            guard known else { throw reader.error(key, "unknown key (see docs/configuration.md)") }
        }

        let stateDefault = ControlSocketPath.firstEntry(environment["STATE_DIRECTORY"]) ?? ControlSocketPath.defaultStateDirectory
        stateDirectory = try reader.string("host.state-dir") ?? stateDefault
        controlSocket = try reader.string("host.control-socket")
            ?? ControlSocketPath.default(environment: environment, stateDirectory: stateDirectory)
        isolation = try reader.choice("host.isolation", IsolationMode.self) ?? .isolated
        faultInjection = try reader.bool("host.fault-injection") ?? false
        logLevel = try reader.choice("host.log-level", ["trace", "debug", "info", "notice", "warning", "error", "critical"]) ?? "info"
        maxAbandoned = try reader.integer("supervisor.max-abandoned", in: 0...1_000) ?? 3
        spareWorkers = try reader.integer("supervisor.spare-workers", in: 0...1) ?? 1
        runtimeDirectory = ControlSocketPath.runtimeDirectory(environment: environment, stateDirectory: stateDirectory)
        crashesKeep = try reader.integer("crashes.keep", in: 1...100_000) ?? 100
        crashesMaxBytes = Int64(try reader.integer("crashes.max-bytes", in: (1 << 20)...(1 << 40)) ?? (64 << 20))
        crashBacktraces = try reader.bool("crashes.backtrace") ?? true
        flightRecorder = try reader.bool("crashes.flight-recorder") ?? true
        quarantine.enabled = try reader.bool("supervisor.quarantine") ?? true
        quarantine.after = try reader.integer("supervisor.quarantine-after", in: 1...1_000) ?? 2
        quarantine.window = try reader.seconds("supervisor.quarantine-window", in: 1...604_800) ?? .seconds(600)
        quarantine.time = try reader.seconds("supervisor.quarantine-time", in: 1...31_536_000) ?? .seconds(3600)
        if let allow = values["supervisor.quarantine-allow"]?.value {
            quarantine.allow = Set(allow.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        }

        adminAllowRemote = try reader.bool("admin.allow-remote") ?? false
        if let listen = try reader.string("admin.listen") {
            let host: String
            do {
                (host, _) = try ListeningSocket.split(endpoint: listen)
            } catch {
                throw reader.error("admin.listen", "'\(listen)': \(error.detail ?? "expected HOST:PORT")")
            }
            // The figures and the probes tell whoever asks how the host is doing and what it serves: only
            // to this machine, unless the operator says otherwise.
            guard adminAllowRemote || AdminAddress.isLoopback(host) else {
                throw reader.error("admin.listen", "'\(listen)' is not a loopback address; set admin.allow-remote = true to serve metrics and probes to other machines")
            }
            adminListen = listen
        }

        let defaults = try reader.supervision(prefix: "supervisor", base: SupervisionSettings())
        for entry in catalog {
            var service = ServiceConfiguration(listen: [entry.defaultListen])
            service.enabled = try reader.bool("\(entry.name).enabled") ?? true
            if let listen = try reader.string("\(entry.name).listen") {
                service.listen = listen.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                for endpoint in service.listen {
                    do {
                        _ = try ListeningSocket.split(endpoint: endpoint)
                    } catch {
                        throw reader.error("\(entry.name).listen", "'\(endpoint)': \(error.detail ?? "expected HOST:PORT")")
                    }
                }
            }
            service.threads = try reader.integer("\(entry.name).threads", in: 1...256) ?? System.coreCount
            service.supervision = try reader.supervision(prefix: entry.name, base: defaults)
            for (option, defaultValue) in entry.options {
                service.options[option] = values["\(entry.name).\(option)"]?.value ?? defaultValue
            }
            let context = ServiceContext(options: service.options, stateDirectory: stateDirectory, threads: service.threads,
                                         hostName: ProcessInfo.processInfo.hostName, services: [])
            do {
                try entry.check(context)
            } catch {
                throw reader.error("\(error.section).\(error.key)", error.problem)
            }
            services[entry.name] = service
        }
    }

    /// The documented ranges of the supervision keys (docs/configuration.md). Zero is refused where it
    /// would turn a safeguard off (a restart window of 0 s counts no restarts; a liveness timeout of 0
    /// declares every instance hung); the upper bounds keep every duration far from overflowing.
    enum Ranges {
        static let maxRestarts = 0...1_000_000
        /// Seconds.
        static let restartWindow = 0.001...604_800.0
        static let stablePeriod = 0.0...604_800.0
        /// Milliseconds.
        static let backoff = 0...3_600_000
        static let timeout = 1...3_600_000
        static let shutdownTimeout = 0...3_600_000
    }

    /// Reads typed values and reports errors with the key and where the value came from.
    struct Reader {
        let values: ConfigurationValues

        func error(_ key: String, _ problem: String) -> ConfigurationError {
            ConfigurationError(key: key, problem: problem, source: values[key]?.source ?? "configuration")
        }

        func string(_ key: String) throws -> String? {
            guard let value = values[key]?.value else { return nil }
            guard !value.isEmpty else { throw error(key, "must not be empty") }
            return value
        }

        func bool(_ key: String) throws -> Bool? {
            guard let value = values[key]?.value else { return nil }
            guard let flag = SettingValue.bool(value) else { throw error(key, "'\(value)' is not a boolean (true or false)") }
            return flag
        }

        func integer(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
            guard let value = values[key]?.value else { return nil }
            return try SettingValue.integer(value, in: range).mapError { error(key, $0.description) }.get()
        }

        func milliseconds(_ key: String, in range: ClosedRange<Int>) throws -> Duration? {
            try integer(key, in: range).map { .milliseconds($0) }
        }

        func seconds(_ key: String, in range: ClosedRange<Double>) throws -> Duration? {
            guard let value = values[key]?.value else { return nil }
            return try SettingValue.seconds(value, in: range).mapError { error(key, $0.description) }.get()
        }

        func choice(_ key: String, _ allowed: [String]) throws -> String? {
            guard let value = values[key]?.value else { return nil }
            guard allowed.contains(value) else { throw error(key, "'\(value)' is not one of \(allowed.joined(separator: ", "))") }
            return value
        }

        func choice<Choice: RawRepresentable & CaseIterable>(_ key: String, _ type: Choice.Type) throws -> Choice?
        where Choice.RawValue == String {
            try choice(key, Choice.allCases.map(\.rawValue)).flatMap(Choice.init(rawValue:))
        }

        func supervision(prefix: String, base: SupervisionSettings) throws -> SupervisionSettings {
            var settings = base
            settings.restartPolicy = try choice("\(prefix).restart-policy", RestartPolicy.self) ?? base.restartPolicy
            settings.maxRestarts = try integer("\(prefix).max-restarts", in: Ranges.maxRestarts) ?? base.maxRestarts
            settings.restartWindow = try seconds("\(prefix).restart-window", in: Ranges.restartWindow) ?? base.restartWindow
            settings.onMaxRestarts = try choice("\(prefix).on-max-restarts", IntensityOutcome.self) ?? base.onMaxRestarts
            settings.backoffInitial = try milliseconds("\(prefix).backoff-initial", in: Ranges.backoff) ?? base.backoffInitial
            settings.backoffMax = try milliseconds("\(prefix).backoff-max", in: Ranges.backoff) ?? base.backoffMax
            settings.stablePeriod = try seconds("\(prefix).stable-period", in: Ranges.stablePeriod) ?? base.stablePeriod
            settings.livenessInterval = try milliseconds("\(prefix).liveness-interval", in: Ranges.timeout) ?? base.livenessInterval
            settings.livenessTimeout = try milliseconds("\(prefix).liveness-timeout", in: Ranges.timeout) ?? base.livenessTimeout
            settings.startupTimeout = try milliseconds("\(prefix).startup-timeout", in: Ranges.timeout) ?? base.startupTimeout
            settings.shutdownTimeout = try milliseconds("\(prefix).shutdown-timeout", in: Ranges.shutdownTimeout) ?? base.shutdownTimeout
            if settings.backoffMax < settings.backoffInitial { settings.backoffMax = settings.backoffInitial }
            return settings
        }
    }
}
