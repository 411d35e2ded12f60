import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// The built `inetinfo` driven by the built `inetinfoctl`, over the real control socket.
@Suite(.serialized, .timeLimit(.minutes(2))) struct HostBinaryTests {
    @Test func statusJSONHasTheDesignSchema() async throws {
        try await withHost { host in
        _ = try await host.waitUntilRunning()
        let result = try host.ctl(["status", "--json"])
        #expect(result.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let hostInfo = try #require(object["host"] as? [String: Any])
        for key in ["pid", "uptimeSeconds", "isolation", "watchdogUsec", "faultInjection", "degraded", "supervisorProblem"] {
            #expect(hostInfo.keys.contains(key), "host.\(key) missing")
        }
        #expect(hostInfo["pid"] as? Int == Int(host.pid))
        #expect(hostInfo["isolation"] as? String == "isolated")
        #expect(hostInfo["watchdogUsec"] is NSNull)
        #expect(hostInfo["faultInjection"] as? Bool == false)
        #expect(hostInfo["degraded"] as? Bool == false)
        #expect(hostInfo["supervisorProblem"] is NSNull)
        let services = try #require(object["services"] as? [[String: Any]])
        #expect(services.map { $0["name"] as? String } == ["smtp", "http"])
        for service in services {
            for key in ["name", "state", "instance", "restarts", "since", "listen", "lastFailure", "enabled"] {
                #expect(service.keys.contains(key), "services[].\(key) missing")
            }
            #expect(service["state"] as? String == "running")
            #expect(service["instance"] as? Int == 1)
            #expect(service["restarts"] as? Int == 0)
            #expect(service["lastFailure"] is NSNull)
            #expect(service["enabled"] as? Bool == true)
            #expect(ControlJSON.parseDate(service["since"] as? String ?? "") != nil)
            #expect((service["listen"] as? [String])?.first?.hasPrefix("127.0.0.1:") == true)
        }

        let human = try host.ctl(["status"])
        #expect(human.status == 0)
        #expect(human.stdout.contains("inetinfo — pid \(host.pid)"))
        #expect(human.stdout.contains("isolated isolation, no watchdog"))
        #expect(!human.stdout.contains("\u{1B}["), "no colour when not on a terminal")
        let rows = human.stdout.split(separator: "\n").filter { $0.hasPrefix("smtp") || $0.hasPrefix("http") }
        #expect(rows.count == 2)
        }
    }

    @Test(arguments: ["isolated", "shared"])
    func injectedThrowAndHangAreRecovered(isolation: String) async throws {
        try await withHost(["--enable-fault-injection", "--isolation", isolation,
                                    "--set", "supervisor.liveness-timeout=300"]) { host in
        let before = try await host.waitUntilRunning()
        let httpPort = try host.port(of: "http", in: before)

        let crash = try host.ctl(["crash", "smtp", "--mode", "throw"])
        #expect(crash.status == 0, "\(crash.stderr)")
        var status = try await Deadline.eventually("smtp instance 2 running", timeout: .seconds(10)) {
            let status = try host.status()
            let smtp = status.services[0]
            return smtp.instance == 2 && smtp.state == .running && status.allEnabledRunning ? status : nil
        }
        #expect(status.services[0].restarts == 1)
        // lastFailure as status --json prints it: a reason and an ISO 8601 time.
        let json = try #require(try JSONSerialization.jsonObject(with: Data(try host.ctl(["status", "--json"]).stdout.utf8)) as? [String: Any])
        let smtpJSON = try #require((json["services"] as? [[String: Any]])?.first { $0["name"] as? String == "smtp" })
        let lastFailure = try #require(smtpJSON["lastFailure"] as? [String: Any])
        #expect((lastFailure["reason"] as? String)?.contains("throw") == true)
        #expect(ControlJSON.parseDate(lastFailure["at"] as? String ?? "") != nil, "lastFailure.at: \(lastFailure["at"] ?? "missing")")
        #expect(status.services[0].lastFailure?.reason == "injected fault: throw")
        let http = status.services[1]
        if isolation == "isolated" {
            #expect(http.instance == 1)
            #expect(http.lastFailure == nil)
        } else {
            #expect(http.instance == 2)
            #expect(http.restarts == 1)
            #expect(http.lastFailure?.reason == "shared fate: smtp failed: injected fault: throw")
        }
        #expect(try TCPTestSocket.httpGet(port: httpPort).status == 200)

        #expect(try host.ctl(["crash", "http", "--mode", "hang"]).status == 0)
        status = try await Deadline.eventually("http replaced after hang", timeout: .seconds(10)) {
            let status = try host.status()
            return status.services[1].lastFailure?.reason.hasPrefix("hung") == true && status.allEnabledRunning ? status : nil
        }
        #expect(status.services[1].lastFailure?.reason == "hung: no answer to a liveness ping within 300 ms")
        #expect(try TCPTestSocket.httpGet(port: httpPort).status == 200)

        let events = try host.ctl(["events", "--json"])
        let lines = events.stdout.split(separator: "\n")
        let decoded = try lines.map { try ControlJSON.decoder().decode(EventRecord.self, from: Data($0.utf8)) }
        #expect(decoded.contains { $0.service == "smtp" && $0.instance == 1 && $0.to == .backoff })
        #expect(decoded.contains { $0.service == "http" && $0.reason.hasPrefix("hung") })
        for line in lines {
            let keys = Set(try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]).keys)
            #expect(keys == ["time", "offsetMs", "service", "instance", "from", "to", "reason"])
        }
        }
    }

    @Test func trapEndsTheHostWithANonZeroStatus() async throws {
        try await withHost(["--enable-fault-injection"]) { host in
        _ = try await host.waitUntilRunning()
        #expect(try host.ctl(["crash", "smtp", "--mode", "trap"]).status == 0)
        let (status, reason) = try await host.waitForExit()
        #expect(reason == .uncaughtSignal)
        #expect(status != 0)
        }
    }

    /// Exit status 70 is the contract for an escalation (systemd logs `status=70/SOFTWARE`), whatever
    /// else ends at the same moment: with HTTP clients busy, the status reporter (whose updates end with
    /// the supervisor) once ended the group first, and the host exited 1.
    @Test func escalationEndsTheHostWithStatus70WhileServing() async throws {
        for round in 1...12 {
            try await withHost(["--enable-fault-injection", "--set", "smtp.max-restarts=0",
                                "--set", "smtp.on-max-restarts=escalate"]) { host in
            let status = try await host.waitUntilRunning()
            let httpPort = try host.port(of: "http", in: status)
            let page = try TCPTestSocket.httpGet(port: httpPort)
            let clients = LoadClients()
            clients.startHTTP(clients: 2, port: httpPort, files: ["/": page.body])
            try await Task.sleep(for: .milliseconds(100))
            #expect(try host.ctl(["crash", "smtp", "--mode", "throw"]).status == 0)
            let (exit, reason) = try await host.waitForExit()
            await clients.stop()
            #expect(reason == .exit && exit == 70, "round \(round): \(reason) \(exit); log:\n\(host.log.suffix(2000))")
            }
        }
    }

    @Test func crashIsRefusedWithoutFaultInjectionAndOnAStoppedService() async throws {
        try await withHost { host in
        _ = try await host.waitUntilRunning()
        let refused = try host.ctl(["crash", "smtp", "--mode", "throw"])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("fault injection is disabled"))

        }
        try await withHost(["--enable-fault-injection"]) { injecting in
        _ = try await injecting.waitUntilRunning()
        #expect(try injecting.ctl(["stop", "smtp"]).status == 0)
        let stopped = try injecting.ctl(["crash", "smtp", "--mode", "throw"])
        #expect(stopped.status == 1)
        #expect(stopped.stderr.contains("smtp is not running (it is stopped)"))
        let status = try injecting.ctl(["status"])
        #expect(status.status == 3)
        #expect(try injecting.ctl(["start", "smtp"]).status == 0)
        _ = try await injecting.waitUntilRunning()
        let unknown = try injecting.ctl(["restart", "gopher"])
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains("no service named 'gopher'"))
        }
    }

    @Test func inetinfoctlSaysWhatToDoWhenNoHostListens() throws {
        let result = try CommandResult.run(TestHost.inetinfoctl, ["status", "--socket", "/tmp/no-such-inetinfo.sock"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("no host is listening on /tmp/no-such-inetinfo.sock — is inetinfo running?"))
    }

    @Test func controlSocketRefusesOtherUsers() async throws {
        try await withHost { host in
        _ = try await host.waitUntilRunning()
        let attributes = try FileManager.default.attributesOfItem(atPath: host.socketPath)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        // The mode keeps `nobody` out of the socket file…
        let byMode = try host.ctl(["status"], asNobody: true)
        #expect(byMode.status == 1)
        #expect(byMode.stderr.contains("permission denied"))
        // …and if the mode is loosened, the peer-credential check still refuses it.
        chmod(host.socketPath, 0o666)
        let byCredentials = try host.ctl(["status"], asNobody: true)
        #expect(byCredentials.status == 1)
        #expect(byCredentials.stderr.contains("permission denied: uid 65534 may not control this host"))
        #expect(try host.ctl(["status"]).status == 0)
        }
    }

    @Test func aSecondHostOnTheSameControlSocketIsRefused() async throws {
        try await withHost { host in
        _ = try await host.waitUntilRunning()
        var configuration = TestHost.Configuration()
            configuration.arguments = ["--control-socket", host.socketPath]
            let second = try TestHost.launch(configuration)
        let (status, _) = try await second.waitForExit()
        #expect(status == 1)
        #expect(second.log.contains("another inetinfo host is already listening on \(host.socketPath)"))
        await second.stop()
        }
    }

    @Test func badConfigurationExitsWithStatus78AndNamesTheKey() async throws {
        try await withHost(["--set", "supervisor.max-restarts=lots"]) { host in
            let (status, _) = try await host.waitForExit()
            #expect(status == 78)
            #expect(host.log.contains("supervisor.max-restarts: 'lots' is not an integer"))
        }
    }
}
