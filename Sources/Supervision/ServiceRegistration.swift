/// One service as the host hands it to the supervisor.
public struct ServiceRegistration: Sendable {
    public var service: any HostedService
    public var settings: SupervisionSettings
    /// The host-owned listening sockets every instance of the service serves.
    public var sockets: [ListeningSocket]
    /// A disabled service is known (it shows in status) but not started.
    public var enabled: Bool

    public init(service: any HostedService, settings: SupervisionSettings, sockets: [ListeningSocket], enabled: Bool = true) {
        self.service = service
        self.settings = settings
        self.sockets = sockets
        self.enabled = enabled
    }
}
