import HTTPService
import Prometheus
import SMTPService

/// Every metric the host exposes: its name, type, help text and label names. The single list of them:
/// the exposition's HELP lines come from here (promtool requires one per family), the worker figures the
/// host accepts are checked against it (a worker names only these, with exactly these labels), and
/// docs/operations.md ("Metrics") lists the same.
enum MetricCatalog {
    enum Kind: Sendable { case counter, gauge, histogram }

    struct Metric: Sendable {
        var name: String
        var kind: Kind
        var labels: [String]
        var help: String
        /// Counted inside a service instance: in process isolation, in a worker, and collected by the host.
        var fromServices = false
        /// For a service's labels: every value it counts with (the host takes no other from a worker).
        var labelValues: [String: [String]] = [:]
    }

    static let all: [Metric] = [
        // Supervision (the host's supervisor, every mode).
        .init(name: "inetinfo_service_up", kind: .gauge, labels: ["service"], help: "1 when the service is running, else 0."),
        .init(name: "inetinfo_service_enabled", kind: .gauge, labels: ["service"], help: "1 when the service is enabled, else 0."),
        .init(name: "inetinfo_service_state", kind: .gauge, labels: ["service", "state"],
              help: "1 for the state the service is in (starting, running, stopping, stopped, backoff, failed), 0 for the others."),
        .init(name: "inetinfo_service_instance", kind: .gauge, labels: ["service"],
              help: "The number of the service's current instance (each start is a new instance)."),
        .init(name: "inetinfo_service_instance_uptime_seconds", kind: .gauge, labels: ["service"],
              help: "Seconds the service has been running in its current instance; 0 when it is not running."),
        .init(name: "inetinfo_service_restarts_total", kind: .counter, labels: ["service", "cause"],
              help: "Restarts of the service after a failure, by what failed (thrown, hang, signal, exit, startup-timeout, shared-fate)."),
        .init(name: "inetinfo_service_ping_duration_seconds", kind: .histogram, labels: ["service"],
              help: "Round trip of the supervisor's liveness pings to the service's instance."),
        // The host.
        .init(name: "inetinfo_host_degraded", kind: .gauge, labels: [],
              help: "1 when an enabled service has failed or the supervisor is unhealthy, else 0."),
        .init(name: "inetinfo_supervisor_healthy", kind: .gauge, labels: [],
              help: "1 while the supervisor's loop ticks and abandoned instances are within the limit (the watchdog rule), else 0."),
        .init(name: "inetinfo_supervisor_abandoned_instances", kind: .gauge, labels: [],
              help: "Hung instances given up on whose threads are still blocked."),
        .init(name: "inetinfo_watchdog_pings_total", kind: .counter, labels: [], help: "WATCHDOG=1 notifications sent to systemd."),
        .init(name: "inetinfo_watchdog_interval_seconds", kind: .gauge, labels: [],
              help: "The systemd watchdog interval (WatchdogSec); 0 when the host runs without a watchdog."),
        .init(name: "inetinfo_build_info", kind: .gauge, labels: ["version", "isolation"],
              help: "Always 1; the labels say which release runs, in which isolation mode."),
        .init(name: "inetinfo_quarantined_addresses", kind: .gauge, labels: [],
              help: "Client addresses refused because their input crashed a service."),
        .init(name: "process_cpu_seconds_total", kind: .counter, labels: [], help: "User and system CPU time of the host process, in seconds."),
        .init(name: "process_resident_memory_bytes", kind: .gauge, labels: [], help: "Resident memory of the host process, in bytes."),
        .init(name: "process_virtual_memory_bytes", kind: .gauge, labels: [], help: "Virtual memory of the host process, in bytes."),
        .init(name: "process_open_fds", kind: .gauge, labels: [], help: "Open file descriptors of the host process."),
        .init(name: "process_max_fds", kind: .gauge, labels: [], help: "The host process's limit of open file descriptors."),
        .init(name: "process_start_time_seconds", kind: .gauge, labels: [], help: "When the host process started, in seconds since the epoch."),
        // SMTP (SMTPService/SMTPMetrics.swift).
        .init(name: "inetinfo_smtp_sessions_open", kind: .gauge, labels: [], help: "SMTP sessions open now.", fromServices: true),
        .init(name: "inetinfo_smtp_sessions_total", kind: .counter, labels: [], help: "SMTP sessions admitted.", fromServices: true),
        .init(name: "inetinfo_smtp_messages_accepted_total", kind: .counter, labels: [],
              help: "Messages acknowledged with 250 after their content (on stable storage).", fromServices: true),
        .init(name: "inetinfo_smtp_message_bytes_total", kind: .counter, labels: [],
              help: "Content octets of the accepted messages.", fromServices: true),
        .init(name: "inetinfo_smtp_replies_total", kind: .counter, labels: ["class"],
              help: "SMTP replies sent, by class (2xx, 3xx, 4xx, 5xx).", fromServices: true,
              labelValues: ["class": SMTPMetrics.replyClasses]),
        .init(name: "inetinfo_smtp_delivery_duration_seconds", kind: .histogram, labels: [],
              help: "From the end of a message's content to its acknowledgement (the commit to stable storage).",
              fromServices: true),
        // HTTP (HTTPService/HTTPMetrics.swift).
        .init(name: "inetinfo_http_requests_total", kind: .counter, labels: ["method", "code"],
              help: "HTTP responses, by request method and status class (code: 1xx to 5xx; method none: no complete request).",
              fromServices: true, labelValues: HTTPMetrics.labelValues),
        .init(name: "inetinfo_http_response_content_bytes_total", kind: .counter, labels: [],
              help: "Content bytes of HTTP responses.", fromServices: true),
        .init(name: "inetinfo_http_request_duration_seconds", kind: .histogram, labels: [],
              help: "From a request head's arrival to the end of its response.", fromServices: true),
        .init(name: "inetinfo_http_connections_open", kind: .gauge, labels: [], help: "HTTP connections open now.", fromServices: true),
        .init(name: "inetinfo_http_connections_total", kind: .counter, labels: [], help: "HTTP connections admitted.", fromServices: true),
    ]

    static let byName: [String: Metric] = Dictionary(all.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })

    /// The name of a family as swift-prometheus wants it: whole, with the catalog's help text.
    static func descriptor(_ name: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: byName[name]?.help ?? name)
    }

    /// Histogram buckets of every duration, in seconds: from half a millisecond (a ping, a cached file) to
    /// ten seconds (a delivery on a struggling disk).
    static let durationBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .microseconds(2_500), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2_500), .seconds(5), .seconds(10),
    ]

    /// ``durationBuckets``' upper bounds in nanoseconds (a worker's recorder and the host's intake bucket with them).
    static let durationBoundsNanoseconds: [Int64] = durationBuckets.map {
        let (seconds, attoseconds) = $0.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
