import Foundation
import Testing
@testable import Supervision

/// The per-service state machine, driven input by input with a hand-moved clock: no tasks, no sockets.
@Suite struct ServiceStateMachineTests {
    typealias Effect = ServiceStateMachine.Effect

    /// A machine and the time it lives at.
    struct Driver {
        var machine: ServiceStateMachine
        var now = Moment(instant: .now, date: Date(timeIntervalSince1970: 1_800_000_000))

        init(_ change: (inout SupervisionSettings) -> Void = { _ in }, enabled: Bool = true) {
            var settings = SupervisionSettings()
            settings.backoffInitial = .milliseconds(100)
            settings.backoffMax = .milliseconds(400)
            settings.maxRestarts = 3
            settings.restartWindow = .seconds(60)
            change(&settings)
            machine = ServiceStateMachine(name: "svc", settings: settings, enabled: enabled)
        }

        mutating func advance(_ duration: Duration) {
            now.instant += duration
            now.date += Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        }

        @discardableResult
        mutating func feed(_ input: ServiceStateMachine.Input) throws -> [Effect] {
            try machine.handle(input, at: now)
        }

        /// Feeds a start and the ready report of the instance it launched.
        mutating func startRunning() throws -> Int {
            let effects = try feed(.start(.hostStarted))
            guard let number = effects.launched else { throw MachineTestError("no launch in \(effects)") }
            try feed(.ready(instance: number))
            return number
        }
    }

    @Test func aStartLaunchesArmsTheStartupTimerAndRecordsStarting() throws {
        var driver = Driver()
        let effects = try driver.feed(.start(.hostStarted))
        #expect(effects == [
            .record(from: .stopped, to: .starting, instance: 1, reason: "host started"),
            .launch(instance: 1),
            .armStartupTimer(instance: 1, after: .seconds(10)),
        ])
        #expect(driver.machine.state == .starting)
        #expect(try driver.feed(.ready(instance: 1)) == [.record(from: .starting, to: .running, instance: 1, reason: "ready")])
        #expect(driver.machine.state == .running)
    }

    @Test func aDisabledServiceIsNotStartedWithTheHost() throws {
        var driver = Driver(enabled: false)
        #expect(try driver.feed(.start(.hostStarted)).isEmpty)
        #expect(driver.machine.state == .stopped)
    }

    @Test func aFailureDisposesTheInstanceAndRestartsAfterTheBackoff() throws {
        var driver = Driver()
        let first = try driver.startRunning()
        driver.advance(.seconds(1))
        let effects = try driver.feed(.failed(instance: first, reason: "boom"))
        #expect(effects == [
            .instanceFailed(instance: 1, reason: "boom"),
            .dispose(instance: 1, hung: false, gracePeriod: .seconds(5)),
            .record(from: .running, to: .backoff, instance: 1, reason: "boom; restarting in 100 ms"),
            .armRestartTimer(token: 1, after: .milliseconds(100)),
        ])
        #expect(driver.machine.lastFailure?.reason == "boom")
        #expect(driver.machine.restarts == 1)
        // The instance's end, reported after its failure, changes nothing.
        #expect(try driver.feed(.ended(instance: 1, .threw(reason: "boom"))).isEmpty)
        driver.advance(.milliseconds(100))
        #expect(try driver.feed(.restartDue(token: 1)).launched == 2)
    }

    @Test func backoffDoublesToItsCapAndStartsAgainAfterAStableRun() throws {
        var driver = Driver { $0.maxRestarts = 100 }
        var number = try driver.startRunning()
        /// Fails the running instance after `uptime`, lets the backoff pass, and returns its delay.
        func failAndRestart(after uptime: Duration) throws -> Duration {
            driver.advance(uptime)
            let effects = try driver.feed(.failed(instance: number, reason: "boom"))
            guard case .armRestartTimer(let token, let delay) = effects.last else { throw MachineTestError("\(effects)") }
            driver.advance(delay)
            guard let next = try driver.feed(.restartDue(token: token)).launched else { throw MachineTestError("no launch") }
            try driver.feed(.ready(instance: next))
            number = next
            return delay
        }
        var delays: [Duration] = []
        for _ in 0..<4 { delays.append(try failAndRestart(after: .seconds(1))) }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(400)])
        #expect(try failAndRestart(after: .seconds(10)) == .milliseconds(100), "a stable run starts the sequence again")
    }

    @Test func aStaleReportAboutAnEarlierInstanceChangesNothing() throws {
        var driver = Driver()
        let first = try driver.startRunning()
        _ = try driver.feed(.failed(instance: first, reason: "boom"))
        #expect(try driver.feed(.restartDue(token: 1)).launched == 2)
        #expect(try driver.feed(.ready(instance: 1)).isEmpty)
        #expect(try driver.feed(.startupDeadline(instance: 1)).isEmpty)
        #expect(try driver.feed(.failed(instance: 1, reason: "late")).isEmpty)
        #expect(try driver.feed(.restartDue(token: 1)).isEmpty)
        #expect(driver.machine.state == .starting && driver.machine.instanceNumber == 2)
    }

    @Test func anInstanceThatIsNotReadyInTimeFails() throws {
        var driver = Driver { $0.startupTimeout = .milliseconds(300) }
        _ = try driver.feed(.start(.hostStarted))
        let effects = try driver.feed(.startupDeadline(instance: 1))
        #expect(effects.first == .instanceFailed(instance: 1, reason: "startup timeout: not ready after 300 ms"))
        #expect(driver.machine.state == .backoff)
    }

    @Test func livenessPingsFollowTheIntervalAndAMissedAnswerIsAHang() throws {
        var driver = Driver { $0.livenessInterval = .milliseconds(500); $0.livenessTimeout = .milliseconds(1000) }
        let number = try driver.startRunning()
        driver.advance(.milliseconds(499))
        #expect(try driver.feed(.tick).isEmpty)
        driver.advance(.milliseconds(1))
        #expect(try driver.feed(.tick) == [.ping(instance: number)])
        // One ping at a time.
        driver.advance(.milliseconds(400))
        #expect(try driver.feed(.tick).isEmpty)
        try driver.feed(.pingAnswered(instance: number))
        driver.advance(.milliseconds(500))
        #expect(try driver.feed(.tick) == [.ping(instance: number)])
        driver.advance(.milliseconds(1000))
        #expect(try driver.feed(.tick).isEmpty, "exactly the timeout is not yet a miss")
        driver.advance(.milliseconds(1))
        let effects = try driver.feed(.tick)
        #expect(effects.prefix(2) == [
            .instanceFailed(instance: number, reason: "hung: no answer to a liveness ping within 1000 ms"),
            .dispose(instance: number, hung: true, gracePeriod: .seconds(5)),
        ])
    }

    @Test func restartPoliciesDecideWhatFollowsAnEnd() throws {
        var transient = Driver { $0.restartPolicy = .transient }
        let first = try transient.startRunning()
        #expect(try transient.feed(.ended(instance: first, .returned)).last
                == .record(from: .running, to: .stopped, instance: 1, reason: "exited"))

        var temporary = Driver { $0.restartPolicy = .temporary }
        let second = try temporary.startRunning()
        _ = try temporary.feed(.failed(instance: second, reason: "boom"))
        #expect(temporary.machine.state == .failed)
        #expect(temporary.machine.restarts == 0)

        var permanent = Driver()
        let third = try permanent.startRunning()
        let effects = try permanent.feed(.ended(instance: third, .exited(status: 0)))
        #expect(effects.contains(.record(from: .running, to: .backoff, instance: 1, reason: "exited; restarting in 100 ms")))
        #expect(permanent.machine.restarts == 0, "a normal end is not a restart after a failure")
    }

    @Test func exceedingTheIntensityMarksFailedOrEscalates() throws {
        for outcome in IntensityOutcome.allCases {
            var driver = Driver { $0.maxRestarts = 2; $0.onMaxRestarts = outcome; $0.backoffInitial = .zero; $0.backoffMax = .zero }
            var number = try driver.startRunning()
            var last: [Effect] = []
            for _ in 0..<3 {
                last = try driver.feed(.failed(instance: number, reason: "boom"))
                number = driver.machine.instanceNumber
                if driver.machine.state == .starting { try driver.feed(.ready(instance: number)) }
            }
            #expect(driver.machine.state == .failed)
            #expect(last.contains(.record(from: .running, to: .failed, instance: 3, reason: "boom; more than 2 restarts in 60 s")))
            #expect(last.contains(.escalate(reason: "more than 2 restarts in 60 s")) == (outcome == .escalate))
        }
    }

    @Test func operatorRequestsAreCheckedAgainstTheState() throws {
        var driver = Driver()
        _ = try driver.startRunning()
        #expect(throws: SupervisorError.alreadyRunning("svc", state: .running)) { try driver.feed(.start(.operator)) }
        let stop = try driver.feed(.stop(reason: "stopped by operator"))
        #expect(stop == [.record(from: .running, to: .stopping, instance: 1, reason: "stopped by operator"),
                         .stop(instance: 1, gracePeriod: .seconds(5))])
        #expect(try driver.feed(.stopFinished(instance: 1, abandoned: true))
                == [.record(from: .stopping, to: .stopped, instance: 1, reason: "stopped by operator; instance did not stop and was abandoned")])
        #expect(try driver.feed(.start(.operator)).launched == 2)
    }

    @Test func anOperatorRestartStopsThenStartsAndIsNotCountedAsARestart() throws {
        var driver = Driver()
        _ = try driver.startRunning()
        let effects = try driver.feed(.restart)
        #expect(effects.last == .stop(instance: 1, gracePeriod: .seconds(5)))
        let after = try driver.feed(.stopFinished(instance: 1, abandoned: false))
        #expect(after.first == .record(from: .stopping, to: .stopped, instance: 1, reason: "restart requested by operator"))
        #expect(after.launched == 2)
        #expect(driver.machine.restarts == 0)
    }

    @Test func aStopOrDisableDuringAnOperatorRestartWins() throws {
        for stop in [ServiceStateMachine.Input.stop(reason: "stopped by operator"),
                     .setEnabled(false, reason: "disabled by reload")] {
            var driver = Driver()
            _ = try driver.startRunning()
            _ = try driver.feed(.restart)
            #expect(try driver.feed(stop).isEmpty, "the drain under way goes on")
            let after = try driver.feed(.stopFinished(instance: 1, abandoned: false))
            #expect(after.launched == nil, "\(stop): nothing starts after the stop")
            #expect(driver.machine.state == .stopped)
        }
    }

    @Test func anEnableDuringAStopStartsTheServiceOnceTheStopIsOver() throws {
        var driver = Driver()
        _ = try driver.startRunning()
        _ = try driver.feed(.setEnabled(false, reason: "disabled by reload"))
        #expect(try driver.feed(.setEnabled(true, reason: "enabled by reload")).isEmpty)
        let after = try driver.feed(.stopFinished(instance: 1, abandoned: false))
        #expect(after.first == .record(from: .stopping, to: .stopped, instance: 1, reason: "disabled by reload"))
        #expect(after.launched == 2)
        #expect(driver.machine.enabled)
    }

    @Test func afterHostShutdownNothingStartsAgain() throws {
        var driver = Driver()
        let number = try driver.startRunning()
        _ = try driver.feed(.failed(instance: number, reason: "boom"))
        #expect(try driver.feed(.hostShutdown(reason: "host shutting down"))
                == [.record(from: .backoff, to: .stopped, instance: 1, reason: "host shutting down")])
        #expect(try driver.feed(.restartDue(token: 1)).isEmpty)
        #expect(throws: SupervisorError.shuttingDown) { try driver.feed(.start(.operator)) }
        #expect(throws: SupervisorError.shuttingDown) { try driver.feed(.restart) }
        #expect(driver.machine.state == .stopped)
    }

    @Test func aFailedPeerTakesTheServiceDownWithoutBeingItsOwnFailure() throws {
        var driver = Driver()
        _ = try driver.startRunning()
        let effects = try driver.feed(.peerFailed(reason: "shared fate: smtp failed: boom"))
        #expect(effects.first == .dispose(instance: 1, hung: false, gracePeriod: .seconds(5)))
        #expect(!effects.contains { if case .instanceFailed = $0 { return true } else { return false } })
        #expect(driver.machine.state == .backoff)
        #expect(driver.machine.lastFailure?.reason == "shared fate: smtp failed: boom")
        // A stopped service has nothing to lose.
        var stopped = Driver(enabled: false)
        #expect(try stopped.feed(.peerFailed(reason: "x")).isEmpty)
    }

    /// Going down with failed peers is counted, but the peer's failures never exhaust this service's own
    /// intensity: it is not marked failed, nor does it end the host, however often the peer fails.
    @Test func aPeersFailuresNeverExhaustThisServicesIntensity() throws {
        var driver = Driver { $0.maxRestarts = 1; $0.onMaxRestarts = .escalate; $0.backoffInitial = .zero; $0.backoffMax = .zero }
        var number = try driver.startRunning()
        for round in 1...5 {
            let effects = try driver.feed(.peerFailed(reason: "shared fate: smtp failed: boom"))
            #expect(!effects.contains { if case .escalate = $0 { return true } else { return false } }, "round \(round)")
            #expect(driver.machine.state == .starting, "round \(round)")
            number = driver.machine.instanceNumber
            try driver.feed(.ready(instance: number))
        }
        #expect(driver.machine.restarts == 5)
        // Its own failures still count as they always did.
        _ = try driver.feed(.failed(instance: number, reason: "own"))
        number = driver.machine.instanceNumber
        try driver.feed(.ready(instance: number))
        let second = try driver.feed(.failed(instance: number, reason: "own again"))
        #expect(second.contains(.escalate(reason: "more than 1 restarts in 60 s")))
    }

    /// An operator's restart is a stop and a start: like a start, it forgets the restart history, so a
    /// service just restarted by hand is not given up on at its next failure.
    @Test func anOperatorRestartForgetsTheRestartHistory() throws {
        var driver = Driver { $0.maxRestarts = 1; $0.backoffInitial = .zero; $0.backoffMax = .zero }
        var number = try driver.startRunning()
        _ = try driver.feed(.failed(instance: number, reason: "one"))
        number = driver.machine.instanceNumber
        try driver.feed(.ready(instance: number))
        _ = try driver.feed(.failed(instance: number, reason: "two"))
        #expect(driver.machine.state == .failed)
        let restarted = try driver.feed(.restart)
        number = try #require(restarted.launched)
        try driver.feed(.ready(instance: number))
        _ = try driver.feed(.failed(instance: number, reason: "three"))
        #expect(driver.machine.state != .failed, "restarted after its first failure since the operator's restart")
    }

    @Test func aReloadEnablesAndDisables() throws {
        var driver = Driver(enabled: false)
        #expect(try driver.feed(.setEnabled(true, reason: "enabled by reload")).launched == 1)
        try driver.feed(.ready(instance: 1))
        let effects = try driver.feed(.setEnabled(false, reason: "disabled by reload"))
        #expect(effects.last == .stop(instance: 1, gracePeriod: .seconds(5)))
        #expect(!driver.machine.enabled)
    }

    @Test func howAnInstanceEndedIsNamed() {
        #expect(InstanceEnd.returned.failureReason == nil)
        #expect(InstanceEnd.exited(status: 0).failureReason == nil)
        #expect(InstanceEnd.exited(status: 1).failureReason == "worker exited with status 1")
        #expect(InstanceEnd.signaled(signal: SIGSEGV).failureReason == "worker exited on signal SIGSEGV")
        #expect(InstanceEnd.signaled(signal: 64).failureReason == "worker exited on signal signal 64")
    }
}

extension [ServiceStateMachine.Effect] {
    /// The instance number a ``ServiceStateMachine/Effect/launch(instance:)`` in the list starts.
    var launched: Int? {
        for effect in self { if case .launch(let number) = effect { return number } }
        return nil
    }
}

struct MachineTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
