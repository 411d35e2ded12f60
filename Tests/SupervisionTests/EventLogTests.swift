import Foundation
import Testing
@testable import Supervision

/// The supervisor's bounded event history and its subscriptions.
@Suite(.timeLimit(.minutes(1))) struct EventLogTests {
    private func event(_ instance: Int) -> SupervisorEvent {
        SupervisorEvent(time: Date(), offsetMs: Int64(instance), service: "svc", instance: instance,
                        from: .starting, to: .running, reason: "event \(instance)")
    }

    @Test func aFullHistoryKeepsTheNewestEventsInOrderAndSubscribersSeeEachOnce() async {
        let log = EventLog(capacity: 3)
        for instance in 1...5 { log.append(event(instance)) }
        #expect(log.history.map(\.instance) == [3, 4, 5])
        let (history, updates) = log.subscribe()
        #expect(history.map(\.instance) == [3, 4, 5])
        for instance in 6...7 { log.append(event(instance)) }
        log.finish()
        var seen: [Int] = []
        for await update in updates { seen.append(update.instance) }
        #expect(seen == [6, 7])
        #expect(log.history.map(\.instance) == [5, 6, 7])
    }
}
