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
        // The numbers docs/configuration.md states, not the code's own initializer.
        let documented = try Self.documentedDefaults()
        let supervision = try #require(config.services["smtp"]?.supervision)
        let durations: [String: Duration] = [
            "restart-window": supervision.restartWindow, "backoff-initial": supervision.backoffInitial,
            "backoff-max": supervision.backoffMax, "stable-period": supervision.stablePeriod,
            "liveness-interval": supervision.livenessInterval, "liveness-timeout": supervision.livenessTimeout,
            "startup-timeout": supervision.startupTimeout, "shutdown-timeout": supervision.shutdownTimeout,
        ]
        for (key, value) in durations {
            let doc = try #require(documented[key], "\(key) is documented")
            let unit: Duration = doc.unit == "ms" ? .milliseconds(1) : .seconds(1)
            #expect(value == unit * (Double(doc.value) ?? -1), "\(key): code \(value), docs \(doc)")
        }
        #expect(documented["max-restarts"]?.value == String(supervision.maxRestarts))
        #expect(documented["restart-policy"]?.value == supervision.restartPolicy.rawValue)
        #expect(documented["on-max-restarts"]?.value == supervision.onMaxRestarts.rawValue)
        #expect(documented["supervisor.max-abandoned"]?.value == String(config.maxAbandoned))
        #expect(documented["supervisor.spare-workers"]?.value == String(config.spareWorkers))
        #expect(documented["host.isolation"]?.value == config.isolation.rawValue)
        #expect(documented["host.log-level"]?.value == config.logLevel)
        // Every service key with a plain documented default has that default in the code, and every key
        // the code has is documented.
        for entry in ServiceCatalog.entries {
            for (key, value) in entry.options {
                let doc = try #require(documented["\(entry.name).\(key)"], "\(entry.name).\(key) is documented")
                guard doc.plain else { continue }
                #expect(doc.value == value, "\(entry.name).\(key): code \(value), docs \(doc.value)")
            }
        }
    }

    /// The first backquoted value of each table row's default column in docs/configuration.md, with
    /// its unit (`ms`, `seconds`) if one follows; `plain` when the column is just that value.
    static func documentedDefaults() throws -> [String: (value: String, unit: String?, plain: Bool)] {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/configuration.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        var defaults: [String: (value: String, unit: String?, plain: Bool)] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 4 else { continue }
            let key = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            // Tables with a flag column have the default in the third cell, the others in the second.
            let cell = cells.count >= 6 ? cells[3] : cells[2]
            let parts = cell.split(separator: "`", omittingEmptySubsequences: false)
            guard parts.count >= 3 else {
                defaults[key] = (cell, nil, false)  // described in words
                continue
            }
            let after = parts[2].trimmingCharacters(in: .whitespaces)
            let unit = after.hasPrefix("ms") ? "ms" : after.hasPrefix("seconds") || after.hasPrefix("(seconds") ? "seconds" : nil
            defaults[key] = (String(parts[1]), unit, parts[0].isEmpty && (after.isEmpty || after.hasPrefix("(") || unit != nil || after.hasPrefix("bytes")))
        }
        return defaults
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
        let unknown = #expect(throws: ConfigurationError.self) { try configuration(["supervisor.max-restart=3"]) }
        #expect(unknown?.description == "--set: supervisor.max-restart: unknown key (see docs/configuration.md)")
        let error = #expect(throws: ConfigurationError.self) { try configuration(["supervisor.max-restarts=many"]) }
        #expect(error?.description == "--set: supervisor.max-restarts: 'many' is not an integer")
        let choice = #expect(throws: ConfigurationError.self) { try configuration(["host.isolation=sometimes"]) }
        #expect(choice?.description == "--set: host.isolation: 'sometimes' is not one of isolated, shared, process")
        let syntax = #expect(throws: ConfigurationError.self) { try configuration([], file: "[supervisor\nmax-restarts = 1") }
        #expect(syntax?.key == nil)
        #expect(syntax?.description.contains("not valid TOML") == true, "\(syntax.map(String.init(describing:)) ?? "")")
        #expect(syntax?.description.contains("(line 1)") == true, "\(syntax.map(String.init(describing:)) ?? "")")
    }

    /// Values that trapped (`inf` as a restart window killed a running host on reload), overflowed later
    /// (a request-line limit of Int.max), or silently turned a safeguard off (a window of 0) are refused
    /// with the key named, for host keys and services' own alike.
    @Test(arguments: [
        "supervisor.restart-window=inf", "supervisor.restart-window=nan", "supervisor.restart-window=0",
        "supervisor.restart-window=-1", "supervisor.restart-window=1e400", "smtp.restart-window=-inf",
        "supervisor.max-restarts=-1", "supervisor.max-restarts=99999999999999999999", "supervisor.backoff-max=-5",
        "http.liveness-timeout=0", "supervisor.liveness-interval=0", "supervisor.stable-period=inf",
        "supervisor.startup-timeout=9223372036854775807", "supervisor.max-abandoned=-1", "smtp.threads=0", "http.threads=100000",
        "smtp.max-sessions=0", "smtp.max-sessions=99999999999999999999", "smtp.idle-timeout=9223372036854775807",
        "smtp.send-timeout=-5", "smtp.max-sessions-per-client=0", "smtp.max-message-size=0", "smtp.recipients=some",
        "smtp.max-bad-commands=1.5", "smtp.simulate-ms02-012=perhaps", "smtp.domains=a/b", "smtp.domains=..",
        "http.header-timeout=0", "http.keepalive-timeout=1e9", "http.max-request-line=9223372036854775807",
        "http.max-header-size=-1", "http.max-connections-per-client=abc", "http.send-timeout=0", "http.file-cache-size=-1",
        "http.web-root=/nonexistent/inetinfo", "smtp.listen=localhost", "http.listen=127.0.0.1:70000",
    ])
    func outOfRangeValuesAreRefusedNamingTheKey(assignment: String) throws {
        let key = String(assignment.prefix { $0 != "=" })
        let error = #expect(throws: ConfigurationError.self) { try configuration([assignment]) }
        #expect(error?.key == key)
        #expect(error?.description.hasPrefix("--set: \(key): ") == true, "\(error.map(String.init(describing:)) ?? "no error")")
    }

    /// Found by the configuration fuzzer: toml++ aborted the process on these (a reload after such a typo
    /// ended the running host). They are errors now; valid files around them still parse.
    @Test(arguments: [
        ("[$]\n", "a table header must start with a key"), ("[#]\n", "a table header must start with a key"),
        ("[é]\n", "a table header must start with a key"), ("[[Ú]]\n", "a table header must start with a key"),
        ("[ +]\n", "a table header must start with a key"), ("[smtp]\n[ {]\n", "a table header must start with a key"),
        ("[t]\nl=1979-05-27T:\n", "dates and times are not configuration values"),
        ("a = 07:32:00\n", "dates and times are not configuration values"),
        ("a = [1979-05-27]\n", "dates and times are not configuration values"),
        ("a = { b = 1979-05-27 }\n", "dates and times are not configuration values"),
        ("a = 1\u{FFFD}\n", "a character outside printable ASCII"), ("x = 1\n\n  [\u{1}a]\n", "a table header must start with a key"), ("a\u{7F} = 1\n", "a character outside printable ASCII"),
    ])
    func inputsThatWouldAbortTheParserAreErrors(text: String, problem: String) throws {
        let error = #expect(throws: ConfigurationError.self) { try configuration([], file: text) }
        #expect(error?.description.contains("not valid TOML: \(problem)") == true, "\(error.map(String.init(describing:)) ?? "")")
    }

    @Test func headersAndBracketsInValuesStillParse() throws {
        let file = """
            # [not a header] in a comment
            [ "host" ]
            isolation = "shared" # [x]
            [supervisor]
            max-restarts = 7
            [smtp]
            domains = [
              "example.org",
              "localhost",
            ]
            simulate-ms02-012 = false
            [http]
            access-log = '''
            [$] in a multi-line string'''
            """
        let config = try configuration([], file: file)
        #expect(config.isolation == .shared)
        #expect(config.services["smtp"]?.supervision.maxRestarts == 7)
        #expect(TOMLPreflight.firstProblem(in: "a = \"\"\"\n[$] 12:00 é\n\"\"\"\n") == nil)
        #expect(TOMLPreflight.firstProblem(in: "a = [\n  [1, 2],\n  [+3],\n]\nb = 1234 # 12:30 ü\n") == nil)
        #expect(TOMLPreflight.firstProblem(in: "a = 1\n[$]\n")?.line == 2)
    }

    @Test(arguments: ["supervisor.restart-window=0.5", "supervisor.max-restarts=100000", "supervisor.backoff-max=50",
                      "supervisor.backoff-initial=0", "smtp.max-sessions-per-client=1", "http.max-body-size=0",
                      "http.file-cache-size=0", "smtp.recipients=existing", "smtp.domains=example.org, mx-1.example.org",
                      "http.listen=[::1]:0", "smtp.listen=127.0.0.1:0,[::1]:0"])
    func valuesInRangeAreTaken(assignment: String) throws {
        _ = try configuration([assignment])
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
