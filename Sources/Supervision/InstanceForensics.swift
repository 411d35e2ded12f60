import Glibc
import Logging

/// What the host keeps an eye on in every instance it runs: where the instance's flight recorder goes,
/// and whom the instance refuses.
public struct InstanceForensics: Sendable {
    /// Where flight recorders go; `nil`: instances record nothing (crash records then have no connections).
    public var flightRecorders: FlightRecorderDirectory?
    /// The host that supervises the instance (it reads the recorder when the instance fails).
    public var hostPid: Int32
    public var quarantine: PeerQuarantine

    public init(flightRecorders: FlightRecorderDirectory?, hostPid: Int32, quarantine: PeerQuarantine) {
        self.flightRecorders = flightRecorders
        self.hostPid = hostPid
        self.quarantine = quarantine
    }

    /// The instance's recorder, in this process; `nil` (the instance runs unrecorded) if it cannot be created.
    func makeRecorder(service: String, instance: Int, logger: Logger) -> FlightRecorder? {
        guard let flightRecorders else { return nil }
        do {
            return try FlightRecorder(path: flightRecorders.file(service: service, instance: instance), service: service,
                                      instance: instance, pid: getpid(), hostPid: hostPid)
        } catch {
            logger.warning("no flight recorder for this instance", metadata: ["error": "\(error)"])
            return nil
        }
    }
}
