import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// `--isolation process`: every service in a worker process of its own, so that a real crash (trap,
/// segfault, abort, exit) ends one service only, and the host restarts it.
@Suite(.serialized, .timeLimit(.minutes(10))) struct WorkerProcessTests {
    /// Fast supervision for tests, in process isolation.
    static func configuration(_ settings: [String: String] = [:]) -> TestHost.Configuration {
        TestHost.Configuration(isolation: "process", settings: [
            "supervisor.backoff-initial": "5", "supervisor.backoff-max": "50", "supervisor.max-restarts": "100000",
            "smtp.liveness-interval": "50", "smtp.liveness-timeout": "300", "http.access-log": "off",
        ].merging(settings) { $1 })
    }

    @Test func everyCrashOfTheSMTPWorkerIsNamedAndRestartedWhileHTTPKeepsServing() async throws {
        try await TestHost.with(Self.configuration()) { host in
            let http = try host.service("http")
            let httpPort = try host.port(of: "http")
            let load = LoadClients()
            load.startHTTP(clients: 1, port: httpPort, files: ["/": try TCPTestSocket.httpGet(port: httpPort).body])
            let expectations: [(TestHost.Fault, signal: String?, exitStatus: Int32?, reason: String)] = [
                (.segv, "SIGSEGV", nil, "worker exited on signal SIGSEGV"),
                (.abort, "SIGABRT", nil, "worker exited on signal SIGABRT"),
                (.exit, nil, 1, "worker exited with status 1"),
                (.trap, "SIGILL", nil, "worker exited on signal SIGILL"),
                (.throw, nil, nil, "injected fault: throw"),
                (.hang, nil, nil, "hung: no answer to a liveness ping within 300 ms"),
            ]
            for (index, expected) in expectations.enumerated() {
                let before = try host.service("smtp")
                let oldPID = try #require(before.pid)
                #expect(oldPID != host.pid, "the service runs in a worker, not in the host")
                try host.inject(expected.0, into: "smtp")
                try await host.waitForState("smtp", .running, instance: index + 2)
                let smtp = try host.service("smtp")
                let failure = try #require(smtp.lastFailure)
                #expect(failure.reason == expected.reason, "\(expected.0)")
                #expect(failure.signal == expected.signal, "\(expected.0)")
                #expect(failure.exitStatus == expected.exitStatus, "\(expected.0)")
                #expect(smtp.pid != oldPID)
                // The old worker is gone for good, reaped (not a zombie): a hung one was killed, not abandoned.
                _ = try await Deadline.eventually("worker \(oldPID) reaped", timeout: .seconds(5)) {
                    ChildProcesses.state(of: oldPID) == nil ? true : nil
                }
                let client = try SMTPTestClient(port: try host.port(of: "smtp"))
                #expect(try client.code() == "220")
            }
            await load.stop()
            let after = try host.status()
            #expect(after.host.pid == host.pid && host.isRunning)
            #expect(after.host.supervisorProblem == nil, "nothing abandoned in process isolation")
            let httpAfter = try host.service("http")
            #expect(httpAfter.instance == http.instance && httpAfter.pid == http.pid, "HTTP never noticed")
            #expect(load.counts.httpFailed == 0, "\(load.counts.httpFailures)")
            #expect(load.counts.httpServed > 0)
        }
    }

    @Test func statusShowsEachWorkersProcess() async throws {
        try await TestHost.with(Self.configuration()) { host in
            let status = try host.status()
            #expect(status.host.isolation == "process")
            let pids = status.services.compactMap(\.pid)
            #expect(pids.count == 2 && Set(pids).count == 2 && !pids.contains(host.pid))
            for service in status.services {
                #expect(ChildProcesses.parent(of: service.pid ?? 0) == host.pid, "\(service.name) is the host's child")
                #expect((service.rssBytes ?? 0) > 1_000_000, "\(service.name) rss \(String(describing: service.rssBytes))")
                #expect(service.cpuSeconds != nil)
            }
            let human = try host.ctl(["status"])
            #expect(human.stdout.contains("PID"))
            #expect(pids.allSatisfy { human.stdout.contains(String($0)) }, "\(human.stdout)")
        }
    }

    @Test func aWorkerKilledFromOutsideIsRecovered() async throws {
        try await TestHost.with(Self.configuration()) { host in
            let pid = try #require(try host.service("smtp").pid)
            #expect(kill(pid, SIGKILL) == 0)
            try await host.waitForState("smtp", .running, instance: 2)
            let failure = try #require(try host.service("smtp").lastFailure)
            #expect(failure.reason == "worker exited on signal SIGKILL" && failure.signal == "SIGKILL")
        }
    }

    /// Each service's active worker and its spare (started once the active one is ready).
    static func allWorkers(of host: TestHost) async throws -> [Int32] {
        try await Deadline.eventually("an active worker and a spare per service", timeout: .seconds(10)) { () -> [Int32]? in
            let workers = ChildProcesses.children(of: host.pid)
            return workers.count == 4 ? workers : nil
        }
    }

    @Test func killingTheHostLeavesNoWorker() async throws {
        try await TestHost.with(Self.configuration()) { host in
            let workers = try await Self.allWorkers(of: host)
            try await host.kill()
            _ = try await Deadline.eventually("every worker gone", timeout: .seconds(5)) { () -> Bool? in
                workers.allSatisfy { ChildProcesses.state(of: $0) == nil } ? true : nil
            }
        }
    }

    @Test func aGracefulStopEndsEveryWorker() async throws {
        try await TestHost.with(Self.configuration()) { host in
            let workers = try await Self.allWorkers(of: host)
            await host.stop()
            _ = try await Deadline.eventually("every worker gone", timeout: .seconds(10)) { () -> Bool? in
                workers.allSatisfy { ChildProcesses.state(of: $0) == nil } ? true : nil
            }
        }
    }

    @Test func restartIntensityAppliesToWorkersToo() async throws {
        try await TestHost.with(Self.configuration(["smtp.max-restarts": "2"])) { host in
            for instance in 1...3 {
                try await host.waitForState("smtp", .running, instance: instance)
                try host.inject(.exit, into: "smtp")
            }
            let failed = try await host.waitForState("smtp", .failed, instance: 3)
            #expect(failed.reason == "worker exited with status 1; more than 2 restarts in 60 s")
            #expect(try host.status().host.degraded)
            #expect(try host.service("smtp").pid == nil)
            #expect(try host.service("http").state == .running)
        }
    }

    @Test func aSlowStartingWorkerMissesItsStartupTimeout() async throws {
        try await TestHost.with(Self.configuration(["smtp.startup-timeout": "400"])) { host in
            try host.inject(.slowStart, into: "smtp")
            let slow = try await host.waitForState("smtp", .backoff, instance: 2)
            #expect(slow.reason.hasPrefix("startup timeout: not ready after 400 ms"))
            try await host.waitForState("smtp", .running, instance: 3)
        }
    }

    @Test func aWorkerThatDoesNotStopInTimeIsKilledNotAbandoned() async throws {
        // The hang blocks the worker's loops; the liveness check is slowed down so that the operator's
        // stop, not the ping, meets the hung worker.
        let settings = ["smtp.shutdown-timeout": "300", "smtp.liveness-interval": "5000", "smtp.liveness-timeout": "10000"]
        try await TestHost.with(Self.configuration(settings)) { host in
            let pid = try #require(try host.service("smtp").pid)
            try host.inject(.hang, into: "smtp")
            try await Task.sleep(for: .milliseconds(300))  // the fault acts on the worker's loop
            let started = ContinuousClock.now
            let reply = try host.client.send(ControlRequest(command: .stop, service: "smtp"))
            #expect(reply.ok)
            let took = ContinuousClock.now - started
            #expect(took >= .milliseconds(300), "the graceful stop was given its time: \(took)")
            let stopped = try #require(try host.events().last { $0.service == "smtp" && $0.to == .stopped })
            #expect(stopped.reason == "stopped by operator")
            _ = try await Deadline.eventually("the hung worker killed and reaped", timeout: .seconds(5)) {
                ChildProcesses.state(of: pid) == nil ? true : nil
            }
            #expect(try host.status().host.supervisorProblem == nil)
        }
    }

    @Test func theSpareTakesOverAndANewSpareStartsBehindIt() async throws {
        try await TestHost.with(Self.configuration()) { host in
            let before = Set(try await Self.allWorkers(of: host))
            let crashed = try #require(try host.service("smtp").pid)
            try host.inject(.segv, into: "smtp")
            try await host.waitForState("smtp", .running, instance: 2)
            let replacement = try #require(try host.service("smtp").pid)
            #expect(before.contains(replacement), "the replacement \(replacement) was one of the workers already started \(before)")
            let after = Set(try await Self.allWorkers(of: host))
            #expect(!after.contains(crashed))
            #expect(after.subtracting(before).count == 1, "one new spare: \(after.subtracting(before))")
        }
    }

    @Test func withoutASpareAWorkerIsStartedOnDemand() async throws {
        try await TestHost.with(Self.configuration(["supervisor.spare-workers": "0"])) { host in
            #expect(ChildProcesses.children(of: host.pid).count == 2)
            try host.inject(.segv, into: "smtp")
            try await host.waitForState("smtp", .running, instance: 2)
            let client = try SMTPTestClient(port: try host.port(of: "smtp"))
            #expect(try client.code() == "220")
            _ = try await Deadline.eventually("two workers again", timeout: .seconds(5)) {
                ChildProcesses.children(of: host.pid).count == 2 ? true : nil
            }
        }
    }

    @Test func theMS02012ProbeCrashesTheSMTPWorkerForRealAndHTTPGoesOn() async throws {
        var configuration = Self.configuration()
        configuration.simulateMS02012 = true
        try await TestHost.with(configuration) { host in
            let http = try host.service("http")
            let client = try SMTPTestClient(port: try host.port(of: "smtp"))
            _ = try client.reply()
            try client.send(MS02012Tests.probe)
            let replies = try (0..<5).map { _ in try client.reply() ?? "(closed)" }
            #expect(replies.last == "(closed)")
            try await host.waitForState("smtp", .running, instance: 2)
            let failure = try #require(try host.service("smtp").lastFailure)
            #expect(failure.signal == "SIGILL", "a Swift trap, as the 2002 service's access violation: \(failure)")
            #expect(try host.status().host.pid == host.pid)
            #expect(try host.service("http").pid == http.pid)
            #expect(try TCPTestSocket.httpGet(port: try host.port(of: "http")).status == 200)
            #expect(host.log.contains("MS02-012 replay"))
        }
    }
}

/// What `/proc` says about processes: the workers of a host, and whether one is a zombie.
enum ChildProcesses {
    /// `(state, parent)` from `/proc/PID/stat`, `nil` when there is no such process.
    private static func stat(of pid: Int32) -> (state: String, parent: Int32)? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")")
        else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 1, let parent = Int32(fields[1]) else { return nil }
        return (String(fields[0]), parent)
    }

    /// `R`, `S`, `Z`, …; `nil` once the process is gone (reaped).
    static func state(of pid: Int32) -> String? { stat(of: pid)?.state }

    static func parent(of pid: Int32) -> Int32? { stat(of: pid)?.parent }

    static func children(of parent: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { stat(of: $0)?.parent == parent }
    }
}
