import Foundation
import NIOConcurrencyHelpers
import NIOCore

/// The supervisor's event history (bounded) and live subscriptions to it.
public final class EventLog: Sendable {
    public let capacity: Int

    private struct State {
        /// A ring: once the history is full, dropping the oldest event must not move the other 9 999
        /// (an array's `removeFirst` did, for every event from then on).
        var events = CircularBuffer<SupervisorEvent>()
        var subscribers: [UUID: AsyncStream<SupervisorEvent>.Continuation] = [:]
    }

    // Guards the history and the subscriber table, so a subscription sees every event exactly once.
    private let state = NIOLockedValueBox(State())

    public init(capacity: Int = 10_000) {
        self.capacity = capacity
    }

    func append(_ event: SupervisorEvent) {
        let subscribers = state.withLockedValue { state in
            state.events.append(event)
            if state.events.count > capacity { state.events.removeFirst(state.events.count - capacity) }
            return Array(state.subscribers.values)
        }
        subscribers.forEach { $0.yield(event) }
    }

    /// Every recorded event, oldest first.
    public var history: [SupervisorEvent] { state.withLockedValue { Array($0.events) } }

    /// The history so far and a stream of every later event, with nothing lost or repeated in between.
    public func subscribe() -> (history: [SupervisorEvent], updates: AsyncStream<SupervisorEvent>) {
        let (stream, continuation) = AsyncStream<SupervisorEvent>.makeStream(bufferingPolicy: .bufferingNewest(capacity))
        let id = UUID()
        let history = state.withLockedValue { state in
            state.subscribers[id] = continuation
            return Array(state.events)
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLockedValue { _ = $0.subscribers.removeValue(forKey: id) }
        }
        return (history, stream)
    }

    /// Ends every subscription (host shutdown).
    func finish() {
        let subscribers = state.withLockedValue { state in
            defer { state.subscribers.removeAll() }
            return Array(state.subscribers.values)
        }
        subscribers.forEach { $0.finish() }
    }
}
