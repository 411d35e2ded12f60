import NIOConcurrencyHelpers
import NIOCore

/// The hand-over of one listening socket from a failed instance to its successor.
///
/// Every instance listens on its own duplicate of the host's socket, and the kernel gives a new connection
/// to whichever of them accepts first. A failed instance closes its listener at once, but that close is a
/// task on the failed instance's loop, which runs it only after the accepts it is busy with (or, on a busy
/// machine, once its thread gets the CPU back): a connection that arrives after the successor reported
/// ready could still be accepted by the failed instance, and cut. So a failed instance's listener is
/// marked retiring here until it is closed, and a successor reports ready only once none is left (or
/// after a bound: a loop that hangs accepts nothing).
///
/// Instances report their listeners by an identity of their choosing: opened, retiring, closed, in any
/// order of the last two (a listener may close before its instance's failure is handled).
public final class ListenerHandover: Sendable {
    public typealias ListenerID = ObjectIdentifier

    private struct State {
        /// Open listeners, and whether each is retiring.
        var open: [ListenerID: Bool] = [:]
        var waiters: [Int: EventLoopPromise<Bool>] = [:]
        var nextWaiter = 0
        var retiring: Int { open.values.count { $0 } }
    }

    // Guards the open listeners and the successors waiting for the retiring ones to close; touched from
    // every instance's loops and tasks.
    private let state = NIOLockedValueBox(State())

    public init() {}

    public func opened(_ listener: ListenerID) {
        state.withLockedValue { $0.open[listener] = false }
    }

    /// A failed instance gives up `listener`, whose close it has begun.
    public func retiring(_ listener: ListenerID) {
        state.withLockedValue { state in
            if state.open[listener] != nil { state.open[listener] = true }
        }
    }

    public func closed(_ listener: ListenerID) {
        let resumed = state.withLockedValue { state -> [EventLoopPromise<Bool>] in
            state.open.removeValue(forKey: listener)
            guard state.retiring == 0 else { return [] }
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        resumed.forEach { $0.succeed(true) }
    }

    /// Succeeds on `eventLoop` once every retiring listener is closed, with `false` if one is still open
    /// after `timeout`.
    public func retiringListenersClosed(within timeout: TimeAmount, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
        let promise = eventLoop.makePromise(of: Bool.self)
        let waiter = state.withLockedValue { state -> Int? in
            guard state.retiring > 0 else { return nil }
            defer { state.nextWaiter += 1 }
            state.waiters[state.nextWaiter] = promise
            return state.nextWaiter
        }
        guard let waiter else {
            promise.succeed(true)
            return promise.futureResult
        }
        let deadline = eventLoop.scheduleTask(in: timeout) { [state] in
            state.withLockedValue { $0.waiters.removeValue(forKey: waiter) }?.succeed(false)
        }
        promise.futureResult.whenComplete { _ in deadline.cancel() }
        return promise.futureResult
    }
}
