import NIOCore
import NIOPosix
import Testing
@testable import Supervision

/// The event loops kept for the next instance of a service.
@Suite(.timeLimit(.minutes(1))) struct SpareLoopGroupTests {
    @Test func theSpareIsGivenOutOnceAndOnlyForTheSameNumberOfThreads() async throws {
        let spares = SpareLoopGroup()
        let kept = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        spares.keep(kept, threads: 2)
        let taken = spares.take(threads: 2)
        #expect(taken === kept)
        try await taken.next().submit {}.get()
        let fresh = spares.take(threads: 2)
        #expect(fresh !== kept)

        spares.keep(fresh, threads: 2)
        let single = spares.take(threads: 1)
        #expect(single !== fresh && Array(single.makeIterator()).count == 1)
        // The mismatched spare was let go of: the next take starts another group.
        let another = spares.take(threads: 2)
        #expect(another !== fresh)
        for group in [taken, single, another] { try await group.shutdownGracefully() }
    }

    @Test func atMostTwoSparesAreKeptSettlingLeavesOneAndShutDownNone() async throws {
        let spares = SpareLoopGroup()
        spares.prepare(threads: 1)
        let prepared = spares.take(threads: 1)
        try await prepared.next().submit {}.get()
        let second = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let third = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        spares.keep(prepared, threads: 1)
        spares.keep(second, threads: 1)
        // A third is not kept beside two.
        spares.keep(third, threads: 1)
        // No spare is prepared while one is kept.
        spares.prepare(threads: 1)
        // Settling lets the older of two go: what is left is the one kept last.
        spares.settle(threads: 1)
        let settled = spares.take(threads: 1)
        #expect(settled === second)
        // Settling with none kept starts one.
        spares.settle(threads: 1)
        let started = spares.take(threads: 1)
        #expect(started !== prepared && started !== second && started !== third)
        try await started.next().submit {}.get()

        spares.keep(started, threads: 1)
        spares.shutDown()
        spares.prepare(threads: 1)
        spares.keep(second, threads: 1)
        let afterShutDown = spares.take(threads: 1)
        #expect(afterShutDown !== started && afterShutDown !== second)
        try await afterShutDown.shutdownGracefully()
    }
}
