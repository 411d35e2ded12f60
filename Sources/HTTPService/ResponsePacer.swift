/// Bounds the work one connection does in one turn of its event loop.
///
/// Ending a response makes NIO's `HTTPServerPipelineHandler` deliver the next pipelined request at once,
/// so a client that sends thousands of small requests in one packet (HEADs, 404s, 304s) would be
/// answered in one uninterrupted run — holding the event loop, and every other connection on it and the
/// supervisor's liveness ping, for as long as that takes, and nesting a stack frame per request. After
/// ``responsesPerTurn`` responses in one run, the next response is ended from a fresh event loop task
/// instead: the pipelining handler waits for that end (and reads nothing meanwhile), other tasks run
/// first. A connection that sends one request at a time is never deferred.
///
/// A run begins with a read from the socket (a connection reads once per turn of its loop, and a read
/// never happens inside another connection's run) or with a deferred end: ``runBegins()`` is called then,
/// so that the count costs no task of its own per request.
///
/// One per connection; confined to its event loop.
final class ResponsePacer {
    static let responsesPerTurn = 32
    private var endedThisRun = 0

    func runBegins() { endedThisRun = 0 }

    /// Whether a response may end now; counts it.
    func mayEndNow() -> Bool {
        endedThisRun += 1
        return endedThisRun <= Self.responsesPerTurn
    }
}
