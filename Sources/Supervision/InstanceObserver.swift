/// Learns of every instance that fails and every instance that ends: the host's crash records.
///
/// Both calls come on the supervisor's loop and must return at once (take a snapshot, hand the rest to
/// a task). A failure is reported before anything is done to the instance (a hung one still runs, a
/// thrown one may still be closing its connections); the end of an instance after its failure, if any.
public protocol InstanceObserver: Sendable {
    func instanceFailed(_ failure: InstanceFailureReport)
    func instanceEnded(service: String, instance: Int)
}

/// One failure of one instance, as the supervisor saw it.
public struct InstanceFailureReport: Sendable {
    public var service: String
    public var instance: Int
    public var reason: String
    /// It stopped answering liveness pings (it still runs, stuck).
    public var hung: Bool
    /// The instance, to learn how it ends (`nil` if the supervisor no longer holds it).
    public var handle: (any InstanceHandle)?

    public init(service: String, instance: Int, reason: String, hung: Bool = false, handle: (any InstanceHandle)?) {
        self.service = service
        self.instance = instance
        self.reason = reason
        self.hung = hung
        self.handle = handle
    }
}
