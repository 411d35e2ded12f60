import Testing
@testable import Supervision

@Suite struct RestartBackoffTests {
    @Test func doublesUpToTheCapAndResetsAfterAStableRun() {
        var backoff = RestartBackoff(initial: .milliseconds(50), maximum: .milliseconds(300), stablePeriod: .seconds(10))
        let quick = Duration.milliseconds(100)
        var delays: [Duration] = []
        for _ in 0..<6 { delays.append(backoff.nextDelay(afterUptime: quick)) }
        #expect(delays == [50, 100, 200, 300, 300, 300].map { Duration.milliseconds($0) })
        #expect(backoff.nextDelay(afterUptime: .seconds(10)) == .milliseconds(50))
        #expect(backoff.nextDelay(afterUptime: quick) == .milliseconds(100))
        backoff.reset()
        #expect(backoff.nextDelay(afterUptime: quick) == .milliseconds(50))
    }

    @Test func zeroInitialDelayStaysZero() {
        var backoff = RestartBackoff(initial: .zero, maximum: .milliseconds(50), stablePeriod: .seconds(1))
        var delays: [Duration] = []
        for _ in 0..<3 { delays.append(backoff.nextDelay(afterUptime: .zero)) }
        #expect(delays == [.zero, .zero, .zero])
    }
}

@Suite struct RestartIntensityTests {
    @Test func admitsAtMostRInAnyWindowOfT() {
        var intensity = RestartIntensity(maxRestarts: 3, window: .seconds(10))
        let start = ContinuousClock.now
        var admitted: [Bool] = []
        for offset in [0, 1, 2, 3] { admitted.append(intensity.admit(at: start + .seconds(offset))) }
        #expect(admitted == [true, true, true, false])
        // The first restart leaves the window at start + 10 s.
        let afterWindow = intensity.admit(at: start + .seconds(10))
        #expect(afterWindow)
        #expect(intensity.count(at: start + .seconds(10)) == 3)
    }

    @Test func zeroRestartsAdmitsNone() {
        var intensity = RestartIntensity(maxRestarts: 0, window: .seconds(1))
        let admitted = intensity.admit(at: .now)
        #expect(!admitted)
    }
}

@Suite struct RestartPolicyTests {
    @Test func restartsAccordingToErlangSemantics() {
        #expect(RestartPolicy.permanent.restarts(afterFailure: true))
        #expect(RestartPolicy.permanent.restarts(afterFailure: false))
        #expect(RestartPolicy.transient.restarts(afterFailure: true))
        #expect(!RestartPolicy.transient.restarts(afterFailure: false))
        #expect(!RestartPolicy.temporary.restarts(afterFailure: true))
        #expect(!RestartPolicy.temporary.restarts(afterFailure: false))
    }
}
