/// One service as the host hands it to the supervisor.
public struct ServiceRegistration: Sendable {
    public var name: String
    /// How the service's instances run: in this process, or in worker processes.
    public var runner: any InstanceRunner
    public var settings: SupervisionSettings
    /// The host-owned listening sockets every instance of the service serves.
    public var sockets: [ListeningSocket]
    /// A disabled service is known (it shows in status) but not started.
    public var enabled: Bool

    public init(name: String, runner: any InstanceRunner, settings: SupervisionSettings, sockets: [ListeningSocket],
                enabled: Bool = true) {
        self.name = name
        self.runner = runner
        self.settings = settings
        self.sockets = sockets
        self.enabled = enabled
    }

    /// A service whose instances run as tasks of this process.
    public init(service: any HostedService, settings: SupervisionSettings, sockets: [ListeningSocket], enabled: Bool = true) {
        self.init(name: service.name, runner: InProcessRunner(service: service), settings: settings, sockets: sockets,
                  enabled: enabled)
    }
}
