/// A service the supervisor hosts: it knows how to run one instance; the supervisor decides when.
///
/// `run` serves on `context.sockets`, calls `context.reportReady(eventLoops:)` once it accepts
/// connections, and returns after `context.untilStopped()` returns (graceful stop) having closed its
/// listeners and, within the shutdown timeout, its connections. A thrown error is a failure.
/// Every call of `run` is a new, disposable instance.
public protocol HostedService: Sendable {
    var name: String { get }
    func run(_ context: InstanceContext) async throws
}
