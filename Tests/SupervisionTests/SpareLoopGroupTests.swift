import Foundation
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
        let taken = try spares.take(threads: 2)
        #expect(taken === kept)
        try await taken.next().submit {}.get()
        let fresh = try spares.take(threads: 2)
        #expect(fresh !== kept)

        spares.keep(fresh, threads: 2)
        let single = try spares.take(threads: 1)
        #expect(single !== fresh && Array(single.makeIterator()).count == 1)
        // The mismatched spare was let go of: the next take starts another group.
        let another = try spares.take(threads: 2)
        #expect(another !== fresh)
        for group in [taken, single, another] { try await group.shutdownGracefully() }
    }

    @Test func twoSparesAtMostOneOnceSettledAndNoneAfterShutDown() async throws {
        let spares = SpareLoopGroup()
        spares.prepare(threads: 1)
        let prepared = try spares.take(threads: 1)
        try await prepared.next().submit {}.get()
        let second = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let third = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        spares.keep(prepared, threads: 1)
        spares.keep(second, threads: 1)
        // A third is not kept beside two, and none is prepared while one is kept.
        spares.keep(third, threads: 1)
        spares.prepare(threads: 1)
        // Settling lets the older of two go; once settled, a late offer is not kept beside the one left.
        spares.settle(threads: 1)
        let late = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        spares.keep(late, threads: 1)
        #expect(try spares.take(threads: 1) === second)
        // Settling with none kept starts one.
        spares.settle(threads: 1)
        let started = try spares.take(threads: 1)
        #expect(started !== prepared && started !== second && started !== third && started !== late)
        try await started.next().submit {}.get()

        spares.keep(started, threads: 1)
        spares.shutDown()
        spares.prepare(threads: 1)
        spares.keep(second, threads: 1)
        let afterShutDown = try spares.take(threads: 1)
        #expect(afterShutDown !== started && afterShutDown !== second)
        try await afterShutDown.shutdownGracefully()
    }

    @Test func noLoopIsStartedWithoutDescriptorsToSpare() async throws {
        // A descriptor limit a few above what is open: a typed failure, not NIO's fatalError.
        var saved = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved)
        let open = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        var tight = saved
        tight.rlim_cur = rlim_t(open + 8)
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &tight)
        let spares = SpareLoopGroup()
        #expect(throws: LoopStartFailure.self) { try spares.take(threads: 1) }
        spares.prepare(threads: 1)
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &saved)
        // Nothing was kept meanwhile: this one is started now.
        let group = try spares.take(threads: 1)
        try await group.next().submit {}.get()
        try await group.shutdownGracefully()
    }
}
