import Glibc
import NIOConcurrencyHelpers
import NIOPosix

/// Event loop groups started ahead of need, for the next instances of one service.
///
/// Contract: every instance gets event loop threads of its own (a hung instance is abandoned with its
/// threads), but starting them — `pthread_create`, an epoll instance, the loop's first turn — and shutting
/// the failed instance's down took about a third of a restart on a 2-core guest (~140 µs on the path from
/// a failure to the replacement's ready report, ~150 µs more of CPU beside the replacement's first
/// requests). So an instance ``take(threads:)``s a spare, and an instance that ended with every
/// connection closed hands its loops on (``keep(_:threads:)``): they have just shown they run, and hold
/// nothing of it any more. Loops of an instance that hangs are never seen again (it is abandoned with
/// them).
///
/// One spare is the aim: the first instance starts it before it reports ready (``prepare(threads:)``),
/// and an instance that has served a while brings the count back to one (``settle(threads:)``), so that
/// the host holds as many threads and descriptors after any number of restarts as after its start. In
/// between there may be two: an instance may end before or after its successor takes a spare, and with
/// room for one only, every other restart would find none. A group is given out once and never shared:
/// a spare is owned by nobody until taken, and after ``shutDown()`` none is kept.
public final class SpareLoopGroup: Sendable {
    static let capacity = 2

    private struct State {
        var spares: [(group: MultiThreadedEventLoopGroup, threads: Int)] = []
        var shutDown = false
    }

    // Guards the spares and whether the owner shut down: instances of one service take, keep and
    // settle from their own tasks, the supervisor shuts down from its loop.
    private let state = NIOLockedValueBox(State())

    public init() {}

    /// The spare kept last if it has `threads` threads, otherwise a group started now. Spares of another
    /// size (from before the service's settings changed) are let go of.
    public func take(threads: Int) -> MultiThreadedEventLoopGroup {
        let (taken, stale) = state.withLockedValue { state -> (MultiThreadedEventLoopGroup?, [MultiThreadedEventLoopGroup]) in
            let stale = state.spares.filter { $0.threads != threads }.map(\.group)
            state.spares.removeAll { $0.threads != threads }
            return (state.spares.popLast()?.group, stale)
        }
        stale.forEach(Self.release)
        return taken ?? MultiThreadedEventLoopGroup(numberOfThreads: threads)
    }

    /// Starts a spare of `threads` threads unless one is kept; blocks for as long as starting threads
    /// takes (call it off every hot path). Starts none while the process is short of descriptors: NIO ends
    /// the process when a loop cannot get its own.
    public func prepare(threads: Int) {
        guard state.withLockedValue({ $0.spares.isEmpty && !$0.shutDown }),
              Self.descriptorsAvailable(threads * Self.descriptorsPerLoop + Self.descriptorsHeadroom)
        else { return }
        keep(MultiThreadedEventLoopGroup(numberOfThreads: threads), threads: threads)
    }

    /// Brings the spares back to one: starts one if none is kept (the predecessor hung, or ended after
    /// its successor took the last one), lets go of one if two are.
    public func settle(threads: Int) {
        let extra = state.withLockedValue { state -> MultiThreadedEventLoopGroup? in
            state.spares.count > 1 ? state.spares.removeFirst().group : nil
        }
        if let extra { Self.release(extra) }
        prepare(threads: threads)
    }

    /// Keeps `group`, whose `threads` loops run and serve nobody, as a spare; shuts it down if two are
    /// kept already or the owner shut down.
    public func keep(_ group: MultiThreadedEventLoopGroup, threads: Int) {
        let kept = state.withLockedValue { state -> Bool in
            guard state.spares.count < Self.capacity, !state.shutDown else { return false }
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

    /// An epoll instance, an eventfd and a timerfd per loop.
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
