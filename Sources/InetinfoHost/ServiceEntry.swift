import CoreMetrics
import Supervision

/// One hosted service the host knows: the single list of them is ``ServiceCatalog``.
public struct ServiceEntry: Sendable {
    public var name: String
    /// Where it listens unless `<name>.listen` says otherwise.
    public var defaultListen: String
    /// Keys of the service's own, with their defaults (as text, parsed by the service).
    public var options: [String: String]
    /// Checks the service's own keys without side effects (throws ``SettingError`` naming the key), so
    /// that a bad value is refused with the configuration, at start and on reload.
    public var check: @Sendable (ServiceContext) throws(SettingError) -> Void
    /// Builds the service from its configuration.
    public var make: @Sendable (ServiceContext) throws -> any HostedService
    /// Makes every metric series the service counts, in a host that collects them from worker processes:
    /// `/metrics` then shows them from the start (at 0), as it does when the service runs in the host.
    public var declareMetrics: @Sendable (any MetricsFactory) -> Void

    public init(name: String, defaultListen: String, options: [String: String] = [:],
                check: @escaping @Sendable (ServiceContext) throws(SettingError) -> Void = { _ in },
                declareMetrics: @escaping @Sendable (any MetricsFactory) -> Void = { _ in },
                make: @escaping @Sendable (ServiceContext) throws -> any HostedService) {
        self.name = name
        self.defaultListen = defaultListen
        self.options = options
        self.check = check
        self.make = make
        self.declareMetrics = declareMetrics
    }
}

/// What a service gets from the host configuration when it is built.
public struct ServiceContext: Sendable {
    public var options: [String: String]
    public var stateDirectory: String
    /// Event loop threads per instance (`SERVICE.threads`).
    public var threads: Int
    public var hostName: String
    /// Every service of the host and whether it is enabled (the default web page lists them).
    public var services: [(name: String, enabled: Bool, listen: [String])]
    /// The service runs in a worker process of its own (`isolation = process`): a crash ends only it.
    public var inWorkerProcess = false
}
