import NIOConcurrencyHelpers

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
        var waiters: [Int: CheckedContinuation<Bool, Never>] = [:]
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
        let resumed = state.withLockedValue { state -> [CheckedContinuation<Bool, Never>] in
            state.open.removeValue(forKey: listener)
            guard state.retiring == 0 else { return [] }
            defer { state.waiters.removeAll() }
            return Array(state.waiters.values)
        }
        resumed.forEach { $0.resume(returning: true) }
    }

    /// Waits until every retiring listener is closed, at most `timeout`; `false` if one is still open then.
    public func untilRetiringListenersClose(within timeout: Duration) async -> Bool {
        let waiter = state.withLockedValue { state -> Int? in
            guard state.retiring > 0 else { return nil }
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        guard let waiter else { return true }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let waiting = state.withLockedValue { state -> Bool in
                guard state.retiring > 0 else { return false }
                state.waiters[waiter] = continuation
                return true
            }
            guard waiting else { return continuation.resume(returning: true) }
            Task { [state] in
                try? await Task.sleep(for: timeout)
                state.withLockedValue { $0.waiters.removeValue(forKey: waiter) }?.resume(returning: false)
            }
        }
    }
}
