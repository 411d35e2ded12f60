import CoreMetrics
import Foundation
import HostControl
import Logging
import NIOPosix
import ServiceLifecycle
import Supervision
import Systemd
import UnixSignals

/// The host process: opens the sockets, runs the supervisor, the control socket and the systemd
/// notifications as one swift-service-lifecycle group (SIGTERM/SIGINT stop it gracefully, SIGHUP reloads).
public enum InetinfoHost {
    /// Exit statuses of `inetinfo` (sysexits.h where one fits).
    public enum ExitStatus: Int32, Sendable {
        case success = 0
        case failure = 1
        /// A service exceeded its restart intensity with `on-max-restarts = escalate`.
        case escalated = 70
        /// The configuration is invalid.
        case configuration = 78
    }

    /// Sets up swift-log: structured journal entries under systemd (or when `journal` says so: a worker,
    /// whose standard error is the host's pipe), one line per event on stderr otherwise.
    public static func bootstrapLogging(level: String, journal: Bool = JournaldLogHandler.isStandardErrorJournal) {
        let logLevel = Logger.Level(rawValue: level) ?? .info
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = journal ? JournaldLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
    }

    /// Reads the configuration (for the log level, before anything logs).
    public static func configuration(options: HostOptions) throws -> HostConfiguration {
        try HostConfiguration(values: try options.values(), catalog: ServiceCatalog.entries,
                              environment: ProcessInfo.processInfo.environment)
    }

    /// A way to stop a host that runs without signal handling (in-process, in tests).
    public struct Handle: Sendable {
        let group: ServiceGroup
        /// Stops the host gracefully, as SIGTERM does.
        public func shutdown() async { await group.triggerGracefulShutdown() }
    }

    /// Runs the host until it is stopped; returns the process exit status.
    /// - Parameters:
    ///   - handlesSignals: SIGTERM/SIGINT stop the host and SIGHUP reloads it; `false` for a host that
    ///     runs inside another program, which stops it through the `started` handle instead.
    ///   - started: called once the host is assembled, before it runs.
    public static func run(options: HostOptions, configuration: HostConfiguration, handlesSignals: Bool = true,
                           started: (@Sendable (Handle) -> Void)? = nil) async -> ExitStatus {
        let logger = Logger(label: "inetinfo")
        let notifier = SystemdNotifier()
        let startTime = ContinuousClock.now
        let startDate = Date()
        let environment = ProcessInfo.processInfo.environment
        let catalog = ServiceCatalog.entries

        let faults = FaultInjector(logger: logger)
        let events = EventLog()
        let quarantine = QuarantineBook(settings: configuration.quarantine, logger: logger)
        let flightRecorders = FlightRecorderDirectory(path: configuration.runtimeDirectory + "/flight")
        let crashes = CrashRecorder(store: CrashStore(directory: configuration.stateDirectory + "/crashes",
                                                      keep: configuration.crashesKeep, maxBytes: configuration.crashesMaxBytes),
                                    flightRecorders: flightRecorders, quarantine: quarantine, events: events, logger: logger)
        // In-process instances consult this one; each worker runner keeps its workers' copies up to date.
        let refused = PeerQuarantine()
        quarantine.subscribe { refused.replace(with: $0) }
        let sockets: HostSockets
        let supervisor: Supervisor
        let metrics: HostMetrics?
        let control: ControlServer
        let watchdogUsec: UInt64?
        do {
            watchdogUsec = try Watchdog.intervalMicroseconds()
            try flightRecorders.create()
            crashes.recordLeftovers()
            sockets = try HostSockets.open(configuration: configuration, catalog: catalog, logger: logger)
            let hostName = ProcessInfo.processInfo.hostName
            let overview = catalog.map { entry in
                (entry.name, configuration.services[entry.name]!.enabled, sockets.services[entry.name]?.map(\.address) ?? [])
            }
            // Kept only when someone can read them: the admin listener is configured (or passed by systemd).
            metrics = sockets.admin == nil ? nil : HostMetrics(isolation: configuration.isolation,
                                                               figures: configuration.runtimeDirectory + "/figures", logger: logger)
            if let metrics, configuration.isolation == .process {
                for entry in catalog { entry.declareMetrics(metrics.factory) }
            }
            let serviceMetrics = metrics?.factory ?? NOOPMetricsHandler.instance
            let workers = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let registrations = try catalog.map { entry -> ServiceRegistration in
                let service = configuration.services[entry.name]!
                let context = ServiceContext(options: service.options, stateDirectory: configuration.stateDirectory,
                                             threads: service.threads, hostName: hostName, services: overview,
                                             inWorkerProcess: configuration.isolation == .process)
                let runner: any InstanceRunner
                if configuration.isolation == .process {
                    let workerRunner = WorkerRunner(
                        executable: options.workerExecutable, service: entry.name, spares: configuration.spareWorkers,
                        group: workers, logger: logger, logLevel: configuration.logLevel,
                        backtrace: configuration.crashBacktraces,
                        configuration: { sockets in
                            WorkerConfiguration(service: entry.name, options: service.options,
                                                stateDirectory: configuration.stateDirectory, threads: service.threads,
                                                hostName: hostName,
                                                services: overview.map { .init(name: $0.0, enabled: $0.1, listen: $0.2) },
                                                sockets: sockets.map { .init(name: $0.name, address: $0.address) },
                                                flightRecorderDirectory: configuration.flightRecorder ? flightRecorders.path : nil,
                                                figuresFile: nil)
                        },
                        readinessDelay: { faults.takeSlowStart(of: entry.name) },
                        figures: metrics?.workers)
                    quarantine.subscribe { [weak workerRunner] in workerRunner?.updateQuarantine($0) }
                    runner = workerRunner
                } else {
                    var hosted = try entry.make(context)
                    if configuration.faultInjection { hosted = faults.instrument(hosted) }
                    runner = InProcessRunner(service: hosted, forensics: InstanceForensics(
                        flightRecorders: configuration.flightRecorder ? flightRecorders : nil, hostPid: getpid(),
                        quarantine: refused), metrics: serviceMetrics)
                }
                return ServiceRegistration(name: entry.name, runner: runner, settings: service.supervision,
                                           sockets: sockets.services[entry.name] ?? [], enabled: service.enabled)
            }
            // The supervisor gets a loop of its own: nothing a service does can block it.
            supervisor = Supervisor(services: registrations, isolation: configuration.isolation,
                                    maxAbandoned: configuration.maxAbandoned,
                                    maxTickAge: SupervisorHealth.maxTickAge(watchdogMicroseconds: watchdogUsec),
                                    eventLoop: MultiThreadedEventLoopGroup(numberOfThreads: 1).next(),
                                    events: events, observer: crashes, metrics: serviceMetrics, logger: logger)
            control = try await ControlServer.bind(path: configuration.controlSocket,
                                                   group: MultiThreadedEventLoopGroup(numberOfThreads: 1), logger: logger)
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            _ = try? notifier.notify(.status("cannot start: \(error)"), .errno(EINVAL))
            return error is ConfigurationError ? .configuration : .failure
        }
        logger.notice("inetinfo starting", metadata: [
            "pid": "\(getpid())", "isolation": "\(configuration.isolation.rawValue)",
            "control": "\(control.path)", "watchdogUsec": "\(watchdogUsec.map(String.init) ?? "none")",
            "listen": "\(sockets.services.mapValues { $0.map(\.address) })", "admin": "\(sockets.admin?.address ?? "off")",
        ])

        let reloader = HostReloader(options: options, configuration: configuration, supervisor: supervisor, quarantine: quarantine,
                                    notifier: notifier, environment: environment,
                                    startable: Set(sockets.services.keys), logger: logger)
        let exposition = metrics.map {
            MetricsExposition(metrics: $0, supervisor: supervisor, quarantine: quarantine, watchdogUsec: watchdogUsec,
                              started: startDate)
        }
        let handler = HostControlHandler(supervisor: supervisor, reloader: reloader, isolation: configuration.isolation,
                                         faults: configuration.faultInjection ? faults : nil, crashes: crashes.store,
                                         quarantine: quarantine, watchdogUsec: watchdogUsec,
                                         admin: sockets.admin?.address, metrics: exposition, started: startTime,
                                         startable: Set(sockets.services.keys), logger: logger)
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        if let admin = sockets.admin, let metrics, let exposition {
            // First in the group, so last to stop: /readyz says 503 while the services stop.
            services.append(.init(service: AdminServer(socket: admin, metrics: exposition, supervisor: supervisor, logger: logger)))
            if let workers = metrics.workers { services.append(.init(service: FigureCollection(workers: workers))) }
        }
        services += [
            .init(service: supervisor, successTerminationBehavior: .gracefullyShutdownGroup,
                  failureTerminationBehavior: .gracefullyShutdownGroup),
            .init(service: ControlService(server: control, handler: handler)),
            // Its updates end when the supervisor's run does: that end is expected, and must not race the
            // supervisor's escalation to be the group's error (exit 1 instead of 70).
            .init(service: StatusReporter(supervisor: supervisor, notifier: notifier, logger: logger),
                  successTerminationBehavior: .ignore),
            .init(service: quarantine),
        ]
        if handlesSignals {
            services.append(.init(service: ReloadSignalListener(reloader: reloader, logger: logger)))
        }
        if let watchdogUsec {
            services.append(.init(service: WatchdogPinger(intervalMicroseconds: watchdogUsec, health: supervisor.health,
                                                          notifier: notifier, pings: metrics?.watchdogPings, logger: logger)))
        }
        let group = ServiceGroup(configuration: .init(services: services,
                                                      gracefulShutdownSignals: handlesSignals ? [.sigterm, .sigint] : [],
                                                      logger: logger))
        started?(Handle(group: group))
        defer { sockets.closeAll() }
        do {
            try await group.run()
            // Every instance has ended (or been abandoned): what is left in the flight recorders, once the
            // pending records are written, is no crash and must not become one at the next start.
            await crashes.finish()
            logger.notice("inetinfo stopped")
            return .success
        } catch let error as SupervisorError {
            await crashes.finish()
            logger.critical("inetinfo exiting", metadata: ["error": "\(error)"])
            _ = try? notifier.notify(.status("exiting: \(error)"))
            return .escalated
        } catch {
            logger.critical("inetinfo failed", metadata: ["error": "\(error)"])
            return .failure
        }
    }
}

/// Takes the workers' figures every second (process isolation, with metrics on), between scrapes: the
/// host's histograms get the workers' observations a second's worth at a time.
struct FigureCollection: Service {
    let workers: WorkerFigures

    func run() async throws {
        _ = try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                workers.collect()
                try await Task.sleep(for: .seconds(1))
            }
        }
    }
}

/// The control socket as a member of the service group.
struct ControlService: Service {
    let server: ControlServer
    let handler: HostControlHandler

    func run() async throws {
        _ = try? await cancelWhenGracefulShutdown {
            try await server.run(handler: handler)
        }
        await server.close()
    }
}

/// SIGHUP reloads the configuration, as for most daemons (and `ExecReload=kill -HUP $MAINPID`).
struct ReloadSignalListener: Service {
    let reloader: HostReloader
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            _ = try? await reloader.reload()
        }
    }
}
