import Logging

/// The seam between the supervisor and the way an instance runs (a task in this process, or a worker
/// process): start an instance with the host's sockets, ping it, ask it to stop, force it, learn that it
/// ended and how.
///
/// Contract: ``launch(_:events:)`` returns at once; the instance reports through `events` (ready at most
/// once, then possibly a failure), and ``InstanceHandle/ended()`` returns once it has ended, whatever
/// the cause. Every call of `launch` is a new, disposable instance.
public protocol InstanceRunner: Sendable {
    func launch(_ spec: InstanceSpec, events: @escaping @Sendable (InstanceEvent) -> Void) -> any InstanceHandle
    /// The supervisor has stopped for good: release what the runner keeps between instances.
    func shutDown()
}

extension InstanceRunner {
    public func shutDown() {}
}

/// What a runner needs to start one instance.
public struct InstanceSpec: Sendable {
    public var service: String
    /// Counts the starts of ``service``: 1 for the first instance.
    public var number: Int
    /// The host-owned listening sockets of the service.
    public var sockets: [ListeningSocket]
    public var logger: Logger

    public init(service: String, number: Int, sockets: [ListeningSocket], logger: Logger) {
        self.service = service
        self.number = number
        self.sockets = sockets
        self.logger = logger
    }
}

/// What an instance tells the supervisor while it runs.
public enum InstanceEvent: Sendable, Equatable {
    /// The instance accepts connections.
    case ready
    /// The instance detected its own failure (it may not have ended yet).
    case failed(reason: String)
}

/// One running instance, as the supervisor drives it.
public protocol InstanceHandle: Sendable {
    /// The process that runs the instance (the host's own for in-process instances).
    var pid: Int32 { get }
    /// Checks that the instance still makes progress; calls `answered` when it does. An instance that
    /// has nothing to ping (no event loops yet, or already shut down) answers at once.
    func ping(answered: @escaping @Sendable () -> Void)
    /// Asks for a graceful stop: stop accepting, finish the connections.
    func requestStop()
    /// Ends the instance at once (its connections are closed); for a process, a kill.
    func forceStop()
    /// Whether ``forceStop()`` ends the instance whatever it is doing (a kill does; an in-process
    /// instance whose threads are blocked cannot be ended, only abandoned).
    var forcedStopIsCertain: Bool { get }
    /// Returns once the instance has ended.
    func ended() async -> InstanceEnd
    /// What the instance's process wrote about its own crash (the Swift runtime's crash report), once it
    /// has ended; `nil` when it wrote none or runs in this process.
    var crashReport: String? { get }
}

extension InstanceHandle {
    public var crashReport: String? { nil }
}
