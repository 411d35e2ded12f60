import HTTPService
import SMTPService
import Supervision

/// The services this host can run, in start order. A new service adds one entry here.
public enum ServiceCatalog {
    public static let entries: [ServiceEntry] = [
        ServiceEntry(name: "smtp", defaultListen: "127.0.0.1:2525", options: SMTPSettings.defaultOptions, check: { context throws(SettingError) in
            _ = try SMTPSettings(options: context.options, stateDirectory: context.stateDirectory, hostName: context.hostName)
        }, declareMetrics: { _ = SMTPMetrics(factory: $0) }) { context in
            let settings = try SMTPSettings(options: context.options, stateDirectory: context.stateDirectory,
                                            hostName: context.hostName)
            return SMTPService(settings: settings, threads: context.threads, simulatedFailureCrashes: context.inWorkerProcess)
        },
        ServiceEntry(name: "http", defaultListen: "127.0.0.1:8080", options: HTTPSettings.defaultOptions, check: { context throws(SettingError) in
            // No render directory: the check writes nothing.
            _ = try HTTPSettings(options: context.options, hostName: context.hostName, services: [])
        }, declareMetrics: { _ = HTTPMetrics(factory: $0) }) { context in
            let settings = try HTTPSettings(options: context.options, hostName: context.hostName,
                                            services: context.services.map { ($0.name, $0.enabled, $0.listen) },
                                            renderDirectory: context.stateDirectory + "/www")
            return HTTPService(settings: settings, threads: context.threads)
        },
    ]
}
