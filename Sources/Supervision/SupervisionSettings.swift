/// The supervision parameters of one service.
public struct SupervisionSettings: Sendable, Equatable {
    public var restartPolicy: RestartPolicy = .permanent
    /// An instance must report ready within this time or it is counted as failed.
    public var startupTimeout: Duration = .seconds(10)
    /// A stopping instance gets this long to finish its connections before it is forced.
    public var shutdownTimeout: Duration = .seconds(5)
    /// How often each instance's event loops are pinged.
    public var livenessInterval: Duration = .milliseconds(500)
    /// An event loop that has not answered a ping after this long is hung.
    public var livenessTimeout: Duration = .milliseconds(1000)
    public var backoffInitial: Duration = .milliseconds(50)
    public var backoffMax: Duration = .milliseconds(2000)
    public var stablePeriod: Duration = .seconds(10)
    public var maxRestarts: Int = 10
    public var restartWindow: Duration = .seconds(60)
    public var onMaxRestarts: IntensityOutcome = .markFailed

    public init() {}
}
