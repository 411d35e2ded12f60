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
            try Self.deliver(3, port: try host.port(of: "smtp"))
            let before = try host.metrics()
            #expect(before.sum("inetinfo_smtp_messages_accepted_total") == 3)

            try host.inject(fault, into: "smtp")
            let waiting = try await Deadline.eventually("/readyz to say smtp is in backoff", timeout: .seconds(10)) {
                let response = try host.admin("/readyz")
                return response.status == 503 ? response : nil
            }
            #expect(waiting.body.contains("{\"service\":\"smtp\",\"state\":\"backoff\"}"), "\(waiting.body)")
            let inBackoff = try host.metrics()
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
