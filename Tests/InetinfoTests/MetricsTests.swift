import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// The admin listener (docs/operations.md, "Metrics and probes"): `/metrics`, `/healthz` and `/readyz`
/// over real sockets, figures that move exactly as the test drives the host, in every isolation mode.
@Suite(.serialized) struct MetricsTests {
    static func configuration(isolation: String, _ settings: [String: String] = [:]) -> TestHost.Configuration {
        var configuration = TestHost.Configuration(isolation: isolation, settings: [
            "admin.listen": "127.0.0.1:0",
            // Long enough to see the backoff in /readyz, short enough for the test.
            "supervisor.backoff-initial": "1500", "supervisor.backoff-max": "1500",
            "crashes.backtrace": "false",
        ])
        configuration.settings.merge(settings) { _, new in new }
        return configuration
    }

    static func deliver(_ count: Int, port: Int) throws {
        let client = try SMTPTestClient(port: port)
        #expect(try client.code() == "220")
        _ = try client.exchange("EHLO metrics.test\r\n")
        for index in 0..<count {
            let reply = try client.sendMessage(from: "a@example.org", to: ["bob@localhost"],
                                               content: Data("Subject: \(index)\r\n\r\nbody\r\n".utf8), useBDAT: index % 2 == 0)
            #expect(reply?.hasPrefix("250") == true, "message \(index): \(reply ?? "closed")")
        }
        _ = try client.exchange("QUIT\r\n")
    }

    static func requestMissing(_ count: Int, port: Int) throws {
        for index in 0..<count {
            let response = try AdminResponse.get(port: port, path: "/no-such-file-\(index)")
            #expect(response.status == 404)
        }
    }

    /// The counters a test causes, read twice: they move by exactly what was done, in each mode (process
    /// isolation reads the workers' figures over their control channels).
    @Test(arguments: ["isolated", "process"])
    func countersMoveByExactlyWhatTheTestCaused(isolation: String) async throws {
        try await TestHost.with(Self.configuration(isolation: isolation)) { host in
            let ready = try host.admin("/readyz")
            #expect(ready.status == 200 && ready.body.contains("\"ready\":true"), "\(ready.status) \(ready.body)")
            #expect(try host.admin("/healthz").status == 200)
            #expect(try host.admin("/nothing").status == 404)

            let before = try host.metrics()
            #expect(before.value("inetinfo_service_up", ["service": "smtp"]) == 1)
            #expect(before.value("inetinfo_service_up", ["service": "http"]) == 1)
            #expect(before.value("inetinfo_build_info", ["isolation": isolation]) == 1)
            for name in ["process_open_fds", "process_resident_memory_bytes", "process_cpu_seconds_total"] {
                #expect((before.value(name) ?? 0) > 0, "\(name)")
            }
            try Self.deliver(10, port: try host.port(of: "smtp"))
            try Self.requestMissing(5, port: try host.port(of: "http"))
            let after = try host.metrics()
            func moved(_ name: String, _ labels: [String: String] = [:]) -> Double {
                after.sum(name, labels) - before.sum(name, labels)
            }
            #expect(moved("inetinfo_smtp_messages_accepted_total") == 10)
            #expect(moved("inetinfo_smtp_sessions_total") == 1)
            #expect(moved("inetinfo_smtp_delivery_duration_seconds_count") == 10)
            #expect(moved("inetinfo_http_requests_total", ["code": "4xx"]) == 5)
            #expect(moved("inetinfo_http_requests_total", ["method": "GET", "code": "4xx"]) == 5)
            #expect(moved("inetinfo_http_requests_total", ["code": "2xx"]) == 0)
            #expect(moved("inetinfo_http_request_duration_seconds_count") == 5)
            #expect(after.sum("inetinfo_service_restarts_total") == 0)
            #expect(after.value("inetinfo_smtp_sessions_open") == 0)
        }
    }

    /// A crash adds exactly one restart, of its cause; `/readyz` is 503 while the service waits in backoff
    /// and names it; counters do not go backwards across the new instance (a new worker, in process
    /// isolation).
    @Test(arguments: [("isolated", TestHost.Fault.throw, "thrown"), ("process", .segv, "signal"), ("process", .exit, "exit")])
    func aCrashAddsOneRestartOfItsCause(isolation: String, fault: TestHost.Fault, cause: String) async throws {
        try await TestHost.with(Self.configuration(isolation: isolation)) { host in
            // No scrape between the messages and the crash: what the instance counted must survive it
            // (in process isolation the worker's counts are in shared memory the host reads after its end).
            try Self.deliver(3, port: try host.port(of: "smtp"))
            try host.inject(fault, into: "smtp")
            let waiting = try await Deadline.eventually("/readyz to say smtp is in backoff", timeout: .seconds(10)) {
                let response = try host.admin("/readyz")
                return response.status == 503 ? response : nil
            }
            #expect(waiting.body.contains("{\"service\":\"smtp\",\"state\":\"backoff\"}"), "\(waiting.body)")
            let inBackoff = try host.metrics()
            #expect(inBackoff.sum("inetinfo_smtp_messages_accepted_total") == 3)
            #expect(inBackoff.value("inetinfo_service_up", ["service": "smtp"]) == 0)
            #expect(inBackoff.value("inetinfo_service_state", ["service": "smtp", "state": "backoff"]) == 1)
            #expect(inBackoff.value("inetinfo_service_up", ["service": "http"]) == 1)

            try await host.waitForState("smtp", .running, instance: 2)
            #expect(try host.admin("/readyz").status == 200)
            try Self.deliver(2, port: try host.port(of: "smtp"))
            let after = try host.metrics()
            #expect(after.value("inetinfo_service_restarts_total", ["service": "smtp", "cause": cause]) == 1)
            #expect(after.sum("inetinfo_service_restarts_total", ["service": "smtp"]) == 1)
            #expect(after.sum("inetinfo_service_restarts_total", ["service": "http"]) == 0)
            #expect(after.sum("inetinfo_smtp_messages_accepted_total") == 5, "counted before the crash, and after")
            #expect(after.value("inetinfo_service_instance", ["service": "smtp"]) == 2)
        }
    }

    /// A service past its restart intensity stays `failed`: `/readyz` 503 naming it, the host degraded,
    /// while the other service is up and `/healthz` (the supervisor is fine) stays 200.
    @Test func aFailedServiceMakesTheHostUnreadyAndDegradedButNotUnhealthy() async throws {
        try await TestHost.with(Self.configuration(isolation: "isolated", ["smtp.max-restarts": "0"])) { host in
            try host.inject(.throw, into: "smtp")
            try await host.waitForState("smtp", .failed)
            let readyz = try host.admin("/readyz")
            #expect(readyz.status == 503)
            #expect(readyz.body.contains("{\"service\":\"smtp\",\"state\":\"failed\"}"), "\(readyz.body)")
            #expect(!readyz.body.contains("http"), "\(readyz.body)")
            let healthz = try host.admin("/healthz")
            #expect(healthz.status == 200)
            let metrics = try host.metrics()
            #expect(metrics.value("inetinfo_host_degraded") == 1)
            #expect(metrics.value("inetinfo_service_state", ["service": "smtp", "state": "failed"]) == 1)
            #expect(metrics.value("inetinfo_service_up", ["service": "http"]) == 1)
            #expect(metrics.sum("inetinfo_service_restarts_total", ["service": "smtp"]) == 0, "refused restarts are not restarts")
        }
    }

    /// `/healthz` follows the watchdog's rule: a wedged supervisor loop turns it 503, while the admin
    /// listener (a loop of its own) still answers `/metrics` and says the supervisor is unhealthy.
    @Test func healthzTurns503WhenTheSupervisorIsWedged() async throws {
        try await TestHost.with(Self.configuration(isolation: "isolated")) { host in
            let port = try host.adminPort()
            #expect(try host.admin("/healthz").status == 200)
            let reply = try host.client.send(ControlRequest(command: .crash, service: "host", mode: "hang"))
            #expect(reply.ok)
            let unhealthy = try await Deadline.eventually("/healthz to say 503", timeout: .seconds(10)) {
                let response = try AdminResponse.get(port: port, path: "/healthz")
                return response.status == 503 ? response : nil
            }
            #expect(unhealthy.body.contains("supervisor loop has not run"), "\(unhealthy.body)")
            let metrics = try AdminResponse.get(port: port, path: "/metrics")
            #expect(metrics.status == 200)
            #expect(MetricSamples(exposition: metrics.body).value("inetinfo_supervisor_healthy") == 0)
            host.signal(SIGKILL)
        }
    }

    /// The admin listener serves loopback only, unless the operator says otherwise: a configuration
    /// error (exit 78) that names the key.
    @Test func aRemoteAdminAddressIsRefusedUnlessAllowed() async throws {
        let refused = try TestHost.launch(.init(settings: ["admin.listen": "0.0.0.0:0"]))
        let (status, _) = try await refused.waitForExit()
        #expect(status == 78)
        #expect(refused.log.contains("admin.listen: '0.0.0.0:0' is not a loopback address; set admin.allow-remote = true"),
                "\(refused.log.suffix(600))")
        await refused.stop()

        try await TestHost.with(.init(settings: ["admin.listen": "0.0.0.0:0", "admin.allow-remote": "true"])) { host in
            let healthz = try host.admin("/healthz")
            #expect(healthz.status == 200)
        }
        try await TestHost.with(.init(settings: ["admin.listen": "[::1]:0"])) { host in
            let admin = try host.status().host.admin
            #expect(admin?.hasPrefix("[::1]:") == true, "\(admin ?? "none")")
        }
        // Off by default: no listener, and status says so.
        try await TestHost.with(.init()) { host in
            let admin = try host.status().host.admin
            #expect(admin == nil)
        }
    }
}

/// `/metrics` as Prometheus' own tools read it: `promtool check metrics` (the format and its lint: help
/// text, `_total` on counters, base units), the Python client's parser, and a real Prometheus server that
/// scrapes the host and answers queries about what the test caused. The tools come from Debian's
/// `prometheus` and `python3-prometheus-client` (scripts/install-deps.sh installs them).
@Suite(.serialized) struct PrometheusToolsTests {
    static let promtool = "/usr/bin/promtool"
    static let prometheus = "/usr/bin/prometheus"
    /// Debian's Python, which has python3-prometheus-client (a `python3` earlier on PATH may not).
    static let python = "/usr/bin/python3"

    static func run(_ executable: String, _ arguments: [String], input: String) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stdout
        try process.run()
        try stdin.fileHandleForWriting.write(contentsOf: Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    /// The names that outside checks read, as samples.
    static let required = ["inetinfo_service_up", "inetinfo_service_restarts_total", "inetinfo_smtp_messages_accepted_total",
                           "inetinfo_http_requests_total", "process_open_fds", "process_resident_memory_bytes",
                           "process_cpu_seconds_total"]

    @Test(arguments: ["isolated", "shared", "process"])
    func promtoolAndThePythonParserAcceptTheExposition(isolation: String) async throws {
        try await TestHost.with(MetricsTests.configuration(isolation: isolation)) { host in
            try MetricsTests.deliver(2, port: try host.port(of: "smtp"))
            try MetricsTests.requestMissing(2, port: try host.port(of: "http"))
            let exposition = try host.admin("/metrics")
            #expect(exposition.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")

            let lint = try Self.run(Self.promtool, ["check", "metrics"], input: exposition.body)
            #expect(lint.status == 0 && lint.output.isEmpty, "promtool check metrics: \(lint.output)")

            let parsed = try Self.run(Self.python, ["-c", """
                import sys
                from prometheus_client.parser import text_string_to_metric_families
                names = set()
                for family in text_string_to_metric_families(sys.stdin.read()):
                    for sample in family.samples:
                        names.add(sample.name)
                print("\\n".join(sorted(names)))
                """], input: exposition.body)
            #expect(parsed.status == 0, "prometheus_client: \(parsed.output)")
            let names = Set(parsed.output.split(separator: "\n").map(String.init))
            for name in Self.required { #expect(names.contains(name), "\(name) missing from the parsed exposition") }
        }
    }

    /// A free loopback port (bound, read, released: a small race, on a machine where nothing else binds).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw TestHostError("no free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// `query` against Prometheus' HTTP API: the first sample's value, `nil` while there is none.
    static func query(_ query: String, port: Int) throws -> Double? {
        let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        let response = try AdminResponse.get(port: port, path: "/api/v1/query?query=\(encoded)")
        guard response.status == 200,
              let object = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any],
              let data = object["data"] as? [String: Any], let result = data["result"] as? [[String: Any]],
              let first = result.first, let value = first["value"] as? [Any], value.count == 2, let text = value[1] as? String
        else { return nil }
        return Double(text)
    }

    @Test func aRealPrometheusScrapesTheHostAndSeesWhatTheTestCaused() async throws {
        try await TestHost.with(MetricsTests.configuration(isolation: "process")) { host in
            let directory = host.directory.appendingPathComponent("prometheus")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let config = directory.appendingPathComponent("prometheus.yml")
            try """
                global:
                  scrape_interval: 1s
                  scrape_timeout: 900ms
                scrape_configs:
                  - job_name: inetinfo
                    static_configs:
                      - targets: ["127.0.0.1:\(try host.adminPort())"]
                """.write(to: config, atomically: true, encoding: .utf8)
            let port = try Self.freePort()
            let server = Process()
            server.executableURL = URL(fileURLWithPath: Self.prometheus)
            server.arguments = ["--config.file=\(config.path)", "--storage.tsdb.path=\(directory.appendingPathComponent("data").path)",
                                "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"]
            let log = FileHandle(forWritingAtPath: "/dev/null")
            server.standardOutput = log
            server.standardError = log
            try server.run()
            defer {
                // Stopped by its pid, whatever happened.
                if server.isRunning {
                    server.terminate()
                    let deadline = Date().addingTimeInterval(5)
                    while server.isRunning, Date() < deadline { usleep(50_000) }
                    if server.isRunning { kill(server.processIdentifier, SIGKILL) }
                }
                server.waitUntilExit()
            }

            _ = try await Deadline.eventually("Prometheus to scrape the host", timeout: .seconds(30), every: .milliseconds(250)) {
                try? Self.query(#"up{job="inetinfo"}"#, port: port) == 1 ? true : nil
            }
            try MetricsTests.deliver(7, port: try host.port(of: "smtp"))
            try host.inject(.segv, into: "smtp")
            try await host.waitForState("smtp", .running, instance: 2)
            try MetricsTests.requestMissing(3, port: try host.port(of: "http"))

            // The server's view, once a scrape after all that has landed.
            let accepted = try await Deadline.eventually("Prometheus to see 7 accepted messages", timeout: .seconds(15), every: .milliseconds(250)) {
                (try? Self.query(#"inetinfo_smtp_messages_accepted_total{job="inetinfo"}"#, port: port)).flatMap { $0 == 7 ? $0 : nil }
            }
            #expect(accepted == 7)
            let restarts = try await Deadline.eventually("Prometheus to see the segfault's restart", timeout: .seconds(15), every: .milliseconds(250)) {
                (try? Self.query(#"inetinfo_service_restarts_total{job="inetinfo",service="smtp",cause="signal"}"#, port: port))
                    .flatMap { $0 == 1 ? $0 : nil }
            }
            #expect(restarts == 1)
            let missing = try await Deadline.eventually("Prometheus to see the 3 not-found requests", timeout: .seconds(15), every: .milliseconds(250)) {
                (try? Self.query(#"sum(inetinfo_http_requests_total{job="inetinfo",code="4xx"})"#, port: port)).flatMap { $0 == 3 ? $0 : nil }
            }
            #expect(missing == 3)
            #expect(try Self.query(#"inetinfo_service_up{job="inetinfo",service="smtp"}"#, port: port) == 1)
        }
    }
}
