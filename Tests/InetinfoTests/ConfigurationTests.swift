import Foundation
import Testing
@testable import InetinfoHost
import Supervision
import Systemd

@Suite struct ConfigurationTests {
    func configuration(_ assignments: [String], file: String? = nil, environment: [String: String] = [:]) throws -> HostConfiguration {
        var options = HostOptions()
        options.assignments = assignments
        if let file {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-\(UUID()).toml").path
            try file.write(toFile: path, atomically: true, encoding: .utf8)
            options.configFile = path
        }
        return try HostConfiguration(values: try options.values(), catalog: ServiceCatalog.entries, environment: environment)
    }

    @Test func defaultsMatchTheDocumentedOnes() throws {
        let config = try configuration([])
        #expect(config.stateDirectory == "./var")
        #expect(config.controlSocket == "./var/run/inetinfo.sock")
        #expect(config.isolation == .isolated)
        #expect(config.services["smtp"]?.listen == ["127.0.0.1:2525"])
        #expect(config.services["http"]?.listen == ["127.0.0.1:8080"])
        #expect(config.services["smtp"]?.supervision == SupervisionSettings())
    }

    @Test func systemdDirectoriesChangeTheDefaults() throws {
        let config = try configuration([], environment: ["STATE_DIRECTORY": "/var/lib/inetinfo", "RUNTIME_DIRECTORY": "/run/inetinfo"])
        #expect(config.stateDirectory == "/var/lib/inetinfo")
        #expect(config.controlSocket == "/run/inetinfo/inetinfo.sock")
    }

    @Test func serviceKeysOverrideSupervisorKeysAndSetOverridesTheFile() throws {
        let file = """
            [host]
            isolation = "shared"
            [supervisor]
            max-restarts = 7
            backoff-max = 900
            [smtp]
            max-restarts = 2
            """
        let config = try configuration(["supervisor.backoff-max=50", "http.enabled=false"], file: file)
        #expect(config.isolation == .shared)
        #expect(config.services["smtp"]?.supervision.maxRestarts == 2)
        #expect(config.services["http"]?.supervision.maxRestarts == 7)
        #expect(config.services["http"]?.supervision.backoffMax == .milliseconds(50))
        #expect(config.services["http"]?.enabled == false)
    }

    @Test func unknownKeysAndBadValuesAreErrorsThatNameTheKey() throws {
        #expect(throws: ConfigurationError.self) { try configuration(["supervisor.max-restart=3"]) }
        let error = #expect(throws: ConfigurationError.self) { try configuration(["supervisor.max-restarts=many"]) }
        #expect(error?.description == "--set: supervisor.max-restarts: 'many' is not an integer")
        #expect(throws: ConfigurationError.self) { try configuration(["host.isolation=sometimes"]) }
        #expect(throws: ConfigurationError.self) { try configuration([], file: "[supervisor\nmax-restarts = 1") }
    }
}

@Suite struct NotifyStateTests {
    @Test func assignmentsAreWrittenAsSdNotifyExpects() throws {
        #expect(NotifyState.ready.line == "READY=1")
        #expect(NotifyState.status("smtp: running,\nhttp: running").line == "STATUS=smtp: running, http: running")
        #expect(NotifyState.watchdog.line == "WATCHDOG=1")
        #expect(NotifyState.watchdogTrigger.line == "WATCHDOG=trigger")
        #expect(NotifyState.stopping.line == "STOPPING=1")
        #expect(NotifyState.reloading(monotonicUsec: 42).line == "RELOADING=1\nMONOTONIC_USEC=42")
        #expect(NotifyState.errno(22).line == "ERRNO=22")
        #expect(NotifyState.extendTimeout(usec: 5_000_000).line == "EXTEND_TIMEOUT_USEC=5000000")
        // Outside systemd nothing is sent and nothing fails.
        #expect(try SystemdNotifier().notify(.ready) == false)
    }
}
