import NIOCore

/// Bounds the work one connection does in one turn of its event loop.
///
/// Ending a response makes NIO's `HTTPServerPipelineHandler` deliver the next pipelined request at once,
/// so a client that sends thousands of small requests in one packet (HEADs, 404s, 304s) would be
/// answered in one uninterrupted run — holding the event loop, and every other connection on it and the
/// supervisor's liveness ping, for as long as that takes, and nesting a stack frame per request. After
/// ``responsesPerTurn`` responses in one turn, the next response is ended from a fresh event loop task
/// instead: the pipelining handler waits for that end (and reads nothing meanwhile), other tasks run
/// first. A connection that sends one request at a time is never deferred.
///
/// One per connection; confined to its event loop.
final class ResponsePacer {
    static let responsesPerTurn = 32
    private var endedThisTurn = 0

    /// Whether a response may end now; counts it. The count starts again once the loop has run the
    /// tasks queued before.
    func mayEndNow(on eventLoop: any EventLoop) -> Bool {
        if endedThisTurn == 0 {
            let pacer = NIOLoopBound(self, eventLoop: eventLoop)
            eventLoop.execute { pacer.value.endedThisTurn = 0 }
        }
        endedThisTurn += 1
        return endedThisTurn <= Self.responsesPerTurn
    }
}
