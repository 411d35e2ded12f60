import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Event loop groups started ahead of need, for the next instances of one service.
///
/// Contract: every instance gets event loop threads of its own (a hung instance is abandoned with its
/// threads), but starting them — `pthread_create`, an epoll instance, the loop's first turn — and shutting
/// the failed instance's down took about a third of a restart on a 2-core guest (~140 µs on the path from
/// a failure to the replacement's ready report, ~150 µs more of CPU beside the replacement's first
/// requests). So an instance ``take(threads:)``s a spare, and an instance that ended with every
/// connection closed offers its loops (``keep(_:threads:)``) once each has run a task for it: they run,
/// and serve nobody. Loops that hang are abandoned with their instance; loops that came back from a stall
/// have shown that they run again.
///
/// One spare is the aim, so that the host holds as many threads and descriptors after any number of
/// restarts as after its start: the first instance starts one before it reports ready
/// (``prepare(threads:)``), and an instance that has served a while settles the count back to one
/// (``settle(threads:)``); from then until the next take, an offered group is kept only if none is.
/// Between a take and the next settle there may be two: an instance may end before or after its
/// successor takes a spare, and with room for one only, every other restart would find none. A group is
/// given out once and never shared: a spare is owned by nobody until taken, and after ``shutDown()`` none
/// is kept.
public final class SpareLoopGroup: Sendable {
    static let capacity = 2

    private struct State {
        var spares: [(group: MultiThreadedEventLoopGroup, threads: Int)] = []
        /// Settled since the last take: one spare is enough (a stalled instance's loops that come back
        /// late are not kept beside it).
        var settled = false
        var shutDown = false
        var room: Int { shutDown ? 0 : (settled ? 1 : SpareLoopGroup.capacity) - spares.count }
    }

    // Guards the spares and whether the owner shut down: instances of one service take, keep and settle
    // from their own tasks, the supervisor shuts down from its loop.
    private let state = NIOLockedValueBox(State())

    public init() {}

    /// The spare kept last if it has `threads` threads, otherwise a group started now. Spares of another
    /// size (from before the service's settings changed) are let go of.
    public func take(threads: Int) throws(LoopStartFailure) -> MultiThreadedEventLoopGroup {
        let (taken, stale) = state.withLockedValue { state -> (MultiThreadedEventLoopGroup?, [MultiThreadedEventLoopGroup]) in
            state.settled = false
            let stale = state.spares.filter { $0.threads != threads }.map(\.group)
            state.spares.removeAll { $0.threads != threads }
            return (state.spares.popLast()?.group, stale)
        }
        stale.forEach(Self.release)
        if let taken { return taken }
        return try Self.start(threads: threads)
    }

    /// Starts a spare of `threads` threads unless one is kept; blocks for as long as starting threads
    /// takes (call it off every hot path). Starts none while the process is short of descriptors.
    public func prepare(threads: Int) {
        guard state.withLockedValue({ $0.spares.isEmpty && !$0.shutDown }),
              let group = try? Self.start(threads: threads)
        else { return }
        keep(group, threads: threads)
    }

    /// Brings the spares back to one: lets go of the older if two are kept, starts one if none is (the
    /// predecessor hung, or ended after its successor took the last one).
    public func settle(threads: Int) {
        let extra = state.withLockedValue { state -> [MultiThreadedEventLoopGroup] in
            state.settled = true
            guard state.spares.count > 1 else { return [] }
            defer { state.spares.removeFirst(state.spares.count - 1) }
            return state.spares.dropLast().map(\.group)
        }
        extra.forEach(Self.release)
        prepare(threads: threads)
    }

    /// Keeps `group`, whose `threads` loops run and serve nobody, as a spare if there is room; shuts it
    /// down otherwise.
    public func keep(_ group: MultiThreadedEventLoopGroup, threads: Int) {
        let kept = state.withLockedValue { state -> Bool in
            guard state.room > 0 else { return false }
            state.spares.append((group, threads))
            return true
        }
        if !kept { Self.release(group) }
    }

    /// Keeps no spare from now on; those kept are shut down.
    public func shutDown() {
        let spares = state.withLockedValue { state -> [MultiThreadedEventLoopGroup] in
            state.shutDown = true
            defer { state.spares.removeAll() }
            return state.spares.map(\.group)
        }
        spares.forEach(Self.release)
    }

    /// A group of `threads` loops started now, unless the process is short of descriptors: NIO ends the
    /// process when a loop cannot get its own (an epoll instance, an eventfd and a timerfd), where an
    /// instance that cannot start only fails.
    public static func start(threads: Int) throws(LoopStartFailure) -> MultiThreadedEventLoopGroup {
        let needed = threads * descriptorsPerLoop + descriptorsHeadroom
        guard descriptorsAvailable(needed) else { throw LoopStartFailure(threads: threads, descriptors: needed) }
        return MultiThreadedEventLoopGroup(numberOfThreads: threads)
    }

    private static let descriptorsPerLoop = 3
    /// Left for the connections being served.
    private static let descriptorsHeadroom = 16

    /// Whether `count` more descriptors can be opened now.
    private static func descriptorsAvailable(_ count: Int) -> Bool {
        var opened: [Int32] = []
        defer { opened.forEach { _ = Glibc.close($0) } }
        for _ in 0..<count {
            let descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { return false }
            opened.append(descriptor)
        }
        return true
    }

    private static func release(_ group: MultiThreadedEventLoopGroup) {
        Task.detached { try? await group.shutdownGracefully() }
    }
}

/// Event loop threads could not be started: the process is short of descriptors.
public struct LoopStartFailure: Error, CustomStringConvertible {
    public var threads: Int
    public var descriptors: Int
    public var description: String {
        "cannot start \(threads) event loop thread(s): fewer than \(descriptors) descriptors are free"
    }
}
