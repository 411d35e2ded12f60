import Foundation
import NIOConcurrencyHelpers
import Testing
@_spi(FaultInjection) @testable import Supervision

/// Supervisor semantics with test services. Every wait has a deadline; no sleep is an assertion.
@Suite(.serialized, .timeLimit(.minutes(1))) struct SupervisorTests {
    @Test func permanentServiceIsRestartedAfterFailureAndAfterNormalExit() async throws {
        let service = ScriptedService(name: "svc") { number in
            switch number {
            case 1: return .failAfter(.milliseconds(20))
            case 2: return .exitAfter(.milliseconds(20))
            default: return .serve
            }
        }
        let harness = try SupervisorHarness([(service, .fast())])
        try await harness.waitForState("svc", .running, instance: 3)
        let snapshot = try await harness.supervisor.snapshot(of: "svc")
        #expect(snapshot.restarts == 1)  // only the failure counts
        #expect(snapshot.lastFailure?.reason == "scripted failure of instance 1")
        await harness.stop()
    }

    @Test func transientServiceStaysStoppedAfterNormalExitButRestartsAfterFailure() async throws {
        let service = ScriptedService(name: "svc") { number in
            number == 1 ? .failAfter(.milliseconds(20)) : .exitAfter(.milliseconds(20))
        }
        let harness = try SupervisorHarness([(service, .fast { $0.restartPolicy = .transient })])
        try await harness.waitForState("svc", .stopped, instance: 2)
        // Not restarted: nothing starts in a window well past the backoff (10–40 ms here).
        try await Task.sleep(for: .milliseconds(400))
        #expect(harness.events.filter { $0.to == .starting }.count == 2)
        await harness.stop()
    }

    @Test func temporaryServiceIsNotRestarted() async throws {
        let service = ScriptedService(name: "svc") { _ in .failAfter(.milliseconds(20)) }
        let harness = try SupervisorHarness([(service, .fast { $0.restartPolicy = .temporary })])
        let failed = try await harness.waitForState("svc", .failed, instance: 1)
        #expect(failed.reason.contains("not restarted (temporary)"))
        try await Task.sleep(for: .milliseconds(400))
        #expect(harness.events.filter { $0.to == .starting }.count == 1)
        await harness.stop()
    }

    @Test func backoffDoublesToTheCapAndResetsAfterAStablePeriod() async throws {
        // Instances 1–5 fail at once; 6 runs past the stable period before failing; 7 serves.
        let service = ScriptedService(name: "svc") { number in
            switch number {
            case 1...5: return .failAfter(.zero)
            case 6: return .failAfter(.milliseconds(400))
            default: return .serve
            }
        }
        let settings = SupervisionSettings.fast {
            $0.backoffInitial = .milliseconds(10)
            $0.backoffMax = .milliseconds(40)
            $0.stablePeriod = .milliseconds(300)
        }
        let harness = try SupervisorHarness([(service, settings)])
        try await harness.waitForState("svc", .running, instance: 7)
        let delays = harness.events.filter { $0.to == .backoff }.map { event in
            event.reason.components(separatedBy: "restarting in ").last ?? ""
        }
        #expect(delays == ["10 ms", "20 ms", "40 ms", "40 ms", "40 ms", "10 ms"])
        await harness.stop()
    }

    @Test func intensityExceededMarksTheServiceFailedAndTheOthersKeepRunning() async throws {
        let failing = ScriptedService(name: "bad") { _ in .failAfter(.zero) }
        let healthy = ScriptedService(name: "good") { _ in .serve }
        let harness = try SupervisorHarness([
            (failing, .fast { $0.maxRestarts = 3; $0.restartWindow = .seconds(60) }),
            (healthy, .fast()),
        ])
        let failed = try await harness.waitForState("bad", .failed)
        #expect(failed.instance == 4)
        #expect(failed.reason.contains("more than 3 restarts in 60 s"))
        let snapshots = await harness.supervisor.snapshot()
        #expect(snapshots.first { $0.name == "good" }?.state == .running)
        #expect(snapshots.first { $0.name == "bad" }?.restarts == 3)
        // An operator start forgets the history and tries again.
        try await harness.supervisor.startService("bad")
        try await harness.waitForState("bad", .starting, instance: 5)
        await harness.stop()
    }

    @Test func intensityExceededWithEscalateEndsRunWithAnError() async throws {
        let failing = ScriptedService(name: "bad") { _ in .failAfter(.zero) }
        let harness = try SupervisorHarness([(failing, .fast { $0.maxRestarts = 2; $0.onMaxRestarts = .escalate })])
        let outcome = try await harness.outcome()
        guard case .failure(let error) = outcome, case .escalated(let service, _)? = error as? SupervisorError else {
            Issue.record("expected escalation, got \(outcome)")
            return
        }
        #expect(service == "bad")
        await harness.stop()
    }

    @Test func instanceThatNeverReportsReadyFailsItsStartupTimeout() async throws {
        let service = ScriptedService(name: "slow") { number in number == 1 ? .neverReady : .serve }
        let harness = try SupervisorHarness([(service, .fast { $0.startupTimeout = .milliseconds(150) })])
        let backoff = try await harness.waitForState("slow", .backoff, instance: 1)
        #expect(backoff.reason.hasPrefix("startup timeout: not ready after 150 ms"))
        try await harness.waitForState("slow", .running, instance: 2)
        await harness.stop()
    }

    @Test func stopIsGracefulThenForcedAfterTheShutdownTimeout() async throws {
        let service = ScriptedService(name: "stubborn") { _ in .ignoreGracefulStop }
        let harness = try SupervisorHarness([(service, .fast { $0.shutdownTimeout = .milliseconds(200) })])
        try await harness.waitForState("stubborn", .running)
        let started = ContinuousClock.now
        try await harness.supervisor.stopService("stubborn")
        let elapsed = ContinuousClock.now - started
        #expect(elapsed >= .milliseconds(200))
        let stopped = try await harness.waitForState("stubborn", .stopped)
        #expect(stopped.reason == "stopped by operator")
        #expect(harness.supervisor.health.abandonedInstances == 0)
        await harness.stop()
    }

    @Test func hungInstanceIsDetectedAbandonedAndReplaced() async throws {
        let harness = try SupervisorHarness([(LineEchoService(name: "echo"), .fast())], maxAbandoned: 0, withSockets: true)
        try await harness.waitForState("echo", .running, instance: 1)
        let port = LineClient.port(of: harness.sockets["echo"]!)
        #expect(try LineClient.exchange(port: port, line: "before") == "1:before")
        try await harness.breakInstance(of: "echo", .hang)
        let hung = try await harness.waitForState("echo", .backoff, instance: 1)
        #expect(hung.reason.hasPrefix("hung: no answer to a liveness ping within 200 ms"))
        try await harness.waitForState("echo", .running, instance: 2)
        #expect(try LineClient.exchange(port: port, line: "after") == "2:after")
        #expect(harness.supervisor.health.abandonedInstances == 1)
        // Past the limit the supervisor stops vouching for the host (the systemd watchdog pings stop).
        #expect(harness.supervisor.health.problem()?.contains("abandoned") == true)
        await harness.stop()
    }

    @Test(arguments: [IsolationMode.isolated, .shared])
    func failureOfOneServiceAffectsTheOtherOnlyInSharedIsolation(isolation: IsolationMode) async throws {
        let harness = try SupervisorHarness([
            (LineEchoService(name: "smtp"), .fast()), (LineEchoService(name: "http"), .fast()),
        ], isolation: isolation, withSockets: true)
        try await harness.waitForState("smtp", .running, instance: 1)
        try await harness.waitForState("http", .running, instance: 1)
        try await harness.breakInstance(of: "smtp", .fail)
        try await harness.waitForState("smtp", .running, instance: 2)
        let http = try await harness.supervisor.snapshot(of: "http")
        switch isolation {
        case .isolated, .process:
            #expect(http.instance == 1)
            #expect(http.restarts == 0)
            #expect(http.lastFailure == nil)
        case .shared:
            try await harness.waitForState("http", .running, instance: 2)
            let after = try await harness.supervisor.snapshot(of: "http")
            #expect(after.restarts == 1)
            #expect(after.lastFailure?.reason == "shared fate: smtp failed: test: instance broken")
        }
        let port = LineClient.port(of: harness.sockets["http"]!)
        #expect(try LineClient.exchange(port: port, line: "x") == (isolation == .isolated ? "1:x" : "2:x"))
        await harness.stop()
    }

    @Test func connectionsMadeDuringARestartWaitInTheBacklogAndAreServed() async throws {
        // A backoff long enough that the connection surely lands inside it, even on a slow machine.
        let settings = SupervisionSettings.fast {
            $0.backoffInitial = .seconds(1)
            $0.backoffMax = .seconds(1)
        }
        let harness = try SupervisorHarness([(LineEchoService(name: "echo"), settings)], withSockets: true)
        try await harness.waitForState("echo", .running, instance: 1)
        try await harness.breakInstance(of: "echo", .fail)
        try await harness.waitForState("echo", .backoff, instance: 1)
        // No instance serves now; the port is still open, so the connection waits in the backlog.
        let port = LineClient.port(of: harness.sockets["echo"]!)
        let exchange = Task.detached { try LineClient.exchange(port: port, line: "waiting") }
        try await Task.sleep(for: .milliseconds(100))
        // The connection was made, and sent its line, while no instance ran.
        #expect(try await harness.supervisor.snapshot(of: "echo").state == .backoff)
        let reply = try await exchange.value
        #expect(reply == "2:waiting")
        await harness.stop()
    }

    @Test func operatorStopStartAndRestart() async throws {
        let harness = try SupervisorHarness([(LineEchoService(name: "echo"), .fast())], withSockets: true)
        try await harness.waitForState("echo", .running, instance: 1)
        try await harness.supervisor.stopService("echo")
        #expect(try await harness.supervisor.snapshot(of: "echo").state == .stopped)
        await #expect(throws: SupervisorError.notRunning("echo", state: .stopped)) {
            try await harness.breakInstance(of: "echo", .fail)
        }
        try await harness.supervisor.startService("echo")
        try await harness.waitForState("echo", .running, instance: 2)
        try await harness.supervisor.restartService("echo")
        try await harness.waitForState("echo", .running, instance: 3)
        let snapshot = try await harness.supervisor.snapshot(of: "echo")
        #expect(snapshot.restarts == 0)
        await #expect(throws: SupervisorError.self) { try await harness.supervisor.startService("nope") }
        await harness.stop()
    }

    @Test func stalledInstanceIsReplacedAndNoLongerCountsOnceItsThreadsComeBack() async throws {
        let harness = try SupervisorHarness([(LineEchoService(name: "echo"), .fast())], withSockets: true)
        try await harness.waitForState("echo", .running, instance: 1)
        try await harness.breakInstance(of: "echo", .stall)
        let hung = try await harness.waitForState("echo", .backoff, instance: 1)
        #expect(hung.reason.hasPrefix("hung:"))
        try await harness.waitForState("echo", .running, instance: 2)
        #expect(harness.supervisor.health.abandonedInstances == 1)
        // The stall lasts three liveness timeouts (600 ms); then the old instance ends itself.
        let deadline = ContinuousClock.now + .seconds(5)
        while harness.supervisor.health.abandonedInstances > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(harness.supervisor.health.abandonedInstances == 0)
        let port = LineClient.port(of: harness.sockets["echo"]!)
        #expect(try LineClient.exchange(port: port, line: "x") == "2:x")
        await harness.stop()
    }

    @Test func aListenerThatDiesFailsTheInstance() async throws {
        let harness = try SupervisorHarness([(LineEchoService(name: "echo"), .fast())], withSockets: true)
        try await harness.waitForState("echo", .running, instance: 1)
        try await harness.breakInstance(of: "echo", .closeListeners)
        let failed = try await harness.waitForState("echo", .backoff, instance: 1)
        #expect(failed.reason.hasPrefix("listener on 127.0.0.1:"))
        try await harness.waitForState("echo", .running, instance: 2)
        let port = LineClient.port(of: harness.sockets["echo"]!)
        #expect(try LineClient.exchange(port: port, line: "y") == "2:y")
        await harness.stop()
    }

    /// A failed instance's listener shares the socket with its successor until its close runs on its loop;
    /// a connection made once the successor reports running must reach the successor, never be accepted
    /// (and cut) by the failed one. A client connecting in a loop keeps the failed listener busy, as under load.
    @Test func connectionsAfterTheReplacementRunsAreNeverCutByTheFailedInstance() async throws {
        let restarts = 150
        let settings = SupervisionSettings.fast {
            $0.backoffInitial = .zero
            $0.backoffMax = .zero
            $0.maxRestarts = restarts * 2
        }
        let harness = try SupervisorHarness([(LineEchoService(name: "echo"), settings)], withSockets: true)
        let port = LineClient.port(of: harness.sockets["echo"]!)
        // The harness polls its events; the test waits for each one the moment it is published.
        let (_, stream) = harness.supervisor.events.subscribe()
        var events = stream.makeAsyncIterator()
        func untilRunning(_ instance: Int) async throws {
            while let event = await events.next() {
                if event.service == "echo" && event.to == .running && event.instance == instance { return }
            }
            throw HarnessError("the event stream ended before instance \(instance) ran")
        }
        try await harness.waitForState("echo", .running, instance: 1)
        let stop = NIOLockedValueBox(false)
        let background = Thread {
            while !stop.withLockedValue({ $0 }) { _ = try? LineClient.exchange(port: port, line: "b") }
        }
        background.start()
        defer { stop.withLockedValue { $0 = true } }
        for instance in 1...restarts {
            try await harness.breakInstance(of: "echo", .fail)
            try await untilRunning(instance + 1)
            let reply = Result { try LineClient.exchange(port: port, line: "x") }
            try #require((try? reply.get()) == "\(instance + 1):x", "after restart \(instance): \(reply)")
        }
        await harness.stop()
    }

    @Test func replacementsServeOnTheLoopsOfEndedInstancesButNeverOnAHungOne() async throws {
        let settings = SupervisionSettings.fast { $0.backoffInitial = .zero; $0.backoffMax = .zero }
        let harness = try SupervisorHarness([(LineEchoService(name: "echo"), settings)], maxAbandoned: 1, withSockets: true)
        let port = LineClient.port(of: harness.sockets["echo"]!)
        func running(_ instance: Int) async throws -> (InProcessInstance, loops: Set<ObjectIdentifier>) {
            try await harness.waitForState("echo", .running, instance: instance)
            let handle = try #require(try await harness.supervisor.runningInstance(of: "echo") as? InProcessInstance)
            return (handle, handle.context.withLiveEventLoops { Set($0.map { ObjectIdentifier($0 as AnyObject) }) })
        }
        func loops(of instance: Int) async throws -> Set<ObjectIdentifier> { try await running(instance).loops }
        // Each instance ends with every connection closed: its loops serve a later one. Ten instances use
        // two groups of loops (the first's and the spare it started; three if one had to be started
        // meanwhile), not ten.
        var seen = Set<ObjectIdentifier>()
        for instance in 1...10 {
            let (handle, loops) = try await running(instance)
            seen.formUnion(loops)
            #expect(try LineClient.exchange(port: port, line: "x") == "\(instance):x")
            try await harness.breakInstance(of: "echo", .fail)
            _ = await handle.ended()
        }
        #expect(seen.count <= 3, "\(seen.count) groups of loops for 10 instances")
        // A hung instance is abandoned with its loops: no successor is ever given them.
        let hung = try await loops(of: 11)
        try await harness.breakInstance(of: "echo", .hang)
        for instance in 12...14 {
            #expect(try await loops(of: instance).isDisjoint(with: hung))
            #expect(try LineClient.exchange(port: port, line: "y") == "\(instance):y")
            try await harness.breakInstance(of: "echo", .fail)
        }
        await harness.stop()
    }

    @Test func aReplacementThatReportsReadyTooLateMissesItsStartupTimeout() async throws {
        let settings = SupervisionSettings.fast { $0.startupTimeout = .milliseconds(200) }
        let service = ScriptedService(name: "svc") { number in
            switch number {
            case 1: return .failAfter(.milliseconds(50))
            case 2: return .readyAfter(.milliseconds(400))
            default: return .serve
            }
        }
        let harness = try SupervisorHarness([(service, settings)])
        let slow = try await harness.waitForState("svc", .backoff, instance: 2)
        #expect(slow.reason.hasPrefix("startup timeout: not ready after 200 ms"))
        try await harness.waitForState("svc", .running, instance: 3)
        // Instance 2's late report changes nothing: instance 3 is the one running.
        try await Task.sleep(for: .milliseconds(400))
        let snapshot = try await harness.supervisor.snapshot(of: "svc")
        #expect(snapshot.instance == 3 && snapshot.state == .running && snapshot.restarts == 2)
        await harness.stop()
    }
}
