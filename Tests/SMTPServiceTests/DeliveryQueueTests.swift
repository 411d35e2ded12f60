import Foundation
import NIOConcurrencyHelpers
import NIOPosix
@testable import SMTPService
import Testing

/// The deliveries behind the journal's 250s: every job once, in order, never two at a time.
@Suite struct DeliveryQueueTests {
    @Test func everyJobRunsOnceInOrderAndNeverBesideAnother() throws {
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        let queue = DeliveryQueue(pool: pool)
        struct Seen { var order: [Int] = []; var running = 0; var overlaps = 0; var inactive = 0 }
        let seen = NIOLockedValueBox(Seen())
        // Three adders at once, each in its own order: per adder, the jobs must run in that order.
        let adders = 3, perAdder = 400
        DispatchQueue.concurrentPerform(iterations: adders) { adder in
            for number in 0..<perAdder {
                queue.add { active in
                    seen.withLockedValue {
                        if $0.running > 0 { $0.overlaps += 1 }
                        $0.running += 1
                        if !active { $0.inactive += 1 }
                    }
                    if number % 50 == 0 { usleep(200) }
                    seen.withLockedValue {
                        $0.order.append(adder * perAdder + number)
                        $0.running -= 1
                    }
                }
            }
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while seen.withLockedValue({ $0.order.count }) < adders * perAdder, ContinuousClock.now < deadline {
            usleep(5000)
        }
        let result = seen.withLockedValue { $0 }
        #expect(result.order.count == adders * perAdder)
        #expect(Set(result.order).count == adders * perAdder, "each job once")
        for adder in 0..<adders {
            let mine = result.order.filter { $0 / perAdder == adder }
            #expect(mine == mine.sorted(), "adder \(adder)'s jobs in the order added")
        }
        #expect(result.overlaps == 0, "jobs ran beside each other")
        #expect(result.inactive == 0)
    }

    @Test func aStoppedPoolRunsTheJobAtOnceAsInactive() throws {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        try pool.syncShutdownGracefully()
        let queue = DeliveryQueue(pool: pool)
        let calls = NIOLockedValueBox<[Bool]>([])
        queue.add { active in calls.withLockedValue { $0.append(active) } }
        queue.add { active in calls.withLockedValue { $0.append(active) } }
        #expect(calls.withLockedValue { $0 } == [false, false], "left to the journal's retries, none lost")
    }
}
