import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import Prometheus
import Supervision

/// The host's metrics: one swift-prometheus registry per host, fed through swift-metrics by the services
/// (``factory``, handed to every instance), the supervisor (restarts, pings), the watchdog pinger and, in
/// process isolation, the workers' reports (``workers``). ``MetricsExposition`` adds, at each scrape, the
/// figures that are states rather than events.
final class HostMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let factory: any MetricsFactory
    /// The workers' figures (process isolation); `nil` in the in-process modes.
    let workers: WorkerFigures?
    let watchdogPings: CoreMetrics.Counter

    /// - Parameter figures: where workers' figure files go (process isolation).
    init(isolation: IsolationMode, figures: String, logger: Logger) {
        let factory = DescribedMetricsFactory(registry: registry)
        self.factory = factory
        workers = isolation == .process ? WorkerFigures(factory: factory, directory: figures, logger: logger) : nil
        watchdogPings = CoreMetrics.Counter(label: "inetinfo_watchdog_pings_total", factory: factory)
    }
}

/// `/metrics`: the host's registry, with the figures that are states (service states, health, the
/// process's own) read as they are at the scrape, and the workers' latest figures collected first.
///
/// Reading never waits for the supervisor's loop: `/metrics` answers while it is wedged, which is when an
/// operator most wants to look.
final class MetricsExposition: Sendable {
    private let metrics: HostMetrics
    private let supervisor: Supervisor
    private let quarantine: QuarantineBook

    private struct ServiceGauges {
        var up: Prometheus.Gauge
        var enabled: Prometheus.Gauge
        var instance: Prometheus.Gauge
        var uptime: Prometheus.Gauge
        var states: [ServiceState: Prometheus.Gauge]
    }

    private let services: [String: ServiceGauges]
    private let degraded: Prometheus.Gauge
    private let healthy: Prometheus.Gauge
    private let abandoned: Prometheus.Gauge
    private let quarantined: Prometheus.Gauge
    private let process: (cpu: Prometheus.Counter, resident: Prometheus.Gauge, virtual: Prometheus.Gauge,
                          fds: Prometheus.Gauge, maxFds: Prometheus.Gauge)
    /// The CPU seconds already added to the counter (it only grows by increments).
    private let cpuCounted = NIOLockedValueBox(0.0)

    init(metrics: HostMetrics, supervisor: Supervisor, quarantine: QuarantineBook, watchdogUsec: UInt64?, started: Date) {
        self.metrics = metrics
        self.supervisor = supervisor
        self.quarantine = quarantine
        let registry = metrics.registry
        func gauge(_ name: String, _ labels: [(String, String)] = []) -> Prometheus.Gauge {
            registry.makeGauge(descriptor: MetricCatalog.descriptor(name), labels: labels)
        }
        let serviceNames = supervisor.latestSnapshot().map(\.name)
        services = Dictionary(uniqueKeysWithValues: serviceNames.map { name in
            let service = [("service", name)]
            return (name, ServiceGauges(
                up: gauge("inetinfo_service_up", service), enabled: gauge("inetinfo_service_enabled", service),
                instance: gauge("inetinfo_service_instance", service),
                uptime: gauge("inetinfo_service_instance_uptime_seconds", service),
                states: Dictionary(uniqueKeysWithValues: ServiceState.allCases.map { state in
                    (state, gauge("inetinfo_service_state", service + [("state", state.rawValue)]))
                })))
        })
        degraded = gauge("inetinfo_host_degraded")
        healthy = gauge("inetinfo_supervisor_healthy")
        abandoned = gauge("inetinfo_supervisor_abandoned_instances")
        quarantined = gauge("inetinfo_quarantined_addresses")
        gauge("inetinfo_build_info", [("version", InetinfoHost.version), ("isolation", supervisor.isolation.rawValue)]).set(to: 1)
        gauge("inetinfo_watchdog_interval_seconds").set(to: Double(watchdogUsec ?? 0) / 1_000_000)
        gauge("process_start_time_seconds").set(to: started.timeIntervalSince1970)
        process = (registry.makeCounter(descriptor: MetricCatalog.descriptor("process_cpu_seconds_total")),
                   gauge("process_resident_memory_bytes"), gauge("process_virtual_memory_bytes"),
                   gauge("process_open_fds"), gauge("process_max_fds"))
    }

    /// The exposition (Prometheus text format 0.0.4): the workers' latest figures collected first, the
    /// states read as they are now.
    func exposition() -> [UInt8] {
        metrics.workers?.collect()
        updateStates()
        return metrics.registry.emitToBuffer()
    }

    private func updateStates() {
        let snapshots = supervisor.latestSnapshot()
        let now = Date()
        for snapshot in snapshots {
            guard let gauges = services[snapshot.name] else { continue }
            let running = snapshot.state == .running
            gauges.up.set(to: running ? 1 : 0)
            gauges.enabled.set(to: snapshot.enabled ? 1 : 0)
            gauges.instance.set(to: Double(snapshot.instance))
            gauges.uptime.set(to: running ? max(now.timeIntervalSince(snapshot.since), 0) : 0)
            for (state, gauge) in gauges.states { gauge.set(to: state == snapshot.state ? 1 : 0) }
        }
        let problem = supervisor.health.problem()
        healthy.set(to: problem == nil ? 1 : 0)
        degraded.set(to: SupervisorHealth.isDegraded(snapshots, supervisorProblem: problem) ? 1 : 0)
        abandoned.set(to: Double(supervisor.health.abandonedInstances))
        quarantined.set(to: Double(quarantine.entries().count))

        let figures = ProcessFigures.read()
        if let cpu = figures.cpuSeconds {
            let increment = cpuCounted.withLockedValue { counted -> Double in
                defer { counted = max(counted, cpu) }
                return max(cpu - counted, 0)
            }
            if increment > 0 { process.cpu.increment(by: increment) }
        }
        figures.residentBytes.map { process.resident.set(to: $0) }
        figures.virtualBytes.map { process.virtual.set(to: $0) }
        figures.openDescriptors.map { process.fds.set(to: $0) }
        figures.maxDescriptors.map { process.maxFds.set(to: $0) }
    }
}
