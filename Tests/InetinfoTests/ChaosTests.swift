import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// Hundreds of mixed failures injected into `smtp` while HTTP and SMTP clients keep working.
/// `INETINFO_CHAOS_INJECTIONS` scales it up for a soak (see docs/testing.md).
///
/// The test reads as its four parts: ``ChaosSetup`` (the web site and the host's settings), the load
/// (``LoadClients``, started before and stopped after the injections), ``ChaosInjector`` (the failures)
/// and ``ChaosAudit`` (what must hold afterwards).
@Suite(.serialized, .timeLimit(.minutes(10))) struct ChaosTests {
    static var injections: Int {
        ProcessInfo.processInfo.environment["INETINFO_CHAOS_INJECTIONS"].flatMap(Int.init) ?? 300
    }

    /// In process isolation the failures are real crashes of the SMTP worker (traps, segfaults, aborts,
    /// exits, hangs ended by SIGKILL).
    @Test(arguments: ["isolated", "shared", "process"])
    func smtpFailuresLoseNoMailAndInIsolationNeverTouchHTTP(isolation: String) async throws {
        let setup = try ChaosSetup(isolation: isolation)
        defer { setup.remove() }
        try await TestHost.with(setup.configuration) { host in
            let baseline = ChaosAudit.Baseline(of: host)

            // Load: HTTP clients checking every body, SMTP clients recording every message they send.
            let load = LoadClients()
            load.startHTTP(clients: 2, port: try host.port(of: "http"), files: setup.files)
            load.startSMTP(clients: 3, port: { try? host.port(of: "smtp") }, tag: "chaos-\(isolation)")

            let faults = isolation == "process" ? ChaosInjector.crashes : ChaosInjector.failures
            let injection = try await ChaosInjector.run(Self.injections, of: faults, into: "smtp", of: host)

            // Let the clients run against a settled service (a window of load, not a wait for a
            // condition), then stop them.
            let settled = try await host.waitUntilRunning(timeout: .seconds(30))
            try await Task.sleep(for: .milliseconds(300))
            await load.stop()

            let audit = try await ChaosAudit(host: host, load: load, settled: settled, baseline: baseline)
            print(audit.report(isolation: isolation, injection: injection))
            audit.expectAll(isolation: isolation)

            // Every failure left a record (the newest 100 kept); none was blamed on the clients, whose
            // input had nothing to do with them, so no one is quarantined.
            let crashes = try host.crashes()
            #expect(crashes.count == min(100, injection.total), "\(crashes.count) records")
            #expect(crashes.allSatisfy { $0.suspect == nil }, "\(crashes.filter { $0.suspect != nil }.prefix(3))")
            #expect(try host.quarantine().isEmpty)
        }
    }
}

/// Setup: a web root with a small and a large file (their contents are what the HTTP clients check), and
/// a host that restarts quickly and often, detects hangs within a fraction of a second and logs no access.
struct ChaosSetup {
    let webRoot: URL
    let files: [String: Data] = ["/small.txt": Data("small file\n".utf8),
                                 "/large.bin": Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 * 7) })]
    let configuration: TestHost.Configuration

    init(isolation: String) throws {
        webRoot = FileManager.default.temporaryDirectory.appendingPathComponent("chaos-www-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: webRoot, withIntermediateDirectories: true)
        for (path, data) in files { try data.write(to: webRoot.appendingPathComponent(String(path.dropFirst()))) }
        var configuration = TestHost.Configuration(isolation: isolation, webRoot: webRoot.path, settings: [
            "supervisor.max-restarts": "100000", "supervisor.backoff-initial": "5", "supervisor.backoff-max": "50",
            "smtp.liveness-interval": "25", "smtp.liveness-timeout": "150", "smtp.startup-timeout": "400",
            "http.access-log": "off",
            // Hundreds of crashes back to back: the backtracer's seconds per crash are not what this measures
            // (WorkerProcessTests and CrashForensicsTests run with it, the default).
            "crashes.backtrace": "false",
        ])
        configuration.mode = .childProcess()
        self.configuration = configuration
    }

    func remove() { try? FileManager.default.removeItem(at: webRoot) }
}

/// Injection: `count` failures of mixed kinds into `service`, each into a fresh running instance (so that
/// every one is a failure of its own), at random moments.
enum ChaosInjector {
    /// What an in-process instance can survive being hit by.
    static let failures: [TestHost.Fault] = [.throw, .throw, .stall, .listener, .slowStart]
    /// What ends a worker process.
    static let crashes: [TestHost.Fault] = [.trap, .segv, .abort, .exit, .hang]

    struct Result {
        var injected: [TestHost.Fault: Int] = [:]
        var duration: Duration = .zero
        var total: Int { injected.values.reduce(0, +) }
        var summary: String {
            injected.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }.joined(separator: ", ")
        }
    }

    static func run(_ count: Int, of faults: [TestHost.Fault], into service: String, of host: TestHost) async throws -> Result {
        var result = Result()
        let started = ContinuousClock.now
        var lastInstance = 0
        while result.total < count {
            let target = try await Deadline.eventually("a new \(service) instance running", timeout: .seconds(30)) { () -> Int? in
                let status = try host.service(service)
                return status.state == .running && status.instance > lastInstance ? status.instance : nil
            }
            // A random moment in the instance's life, not always its first milliseconds.
            try await Task.sleep(for: .milliseconds(Int.random(in: 5...60)))
            let fault = faults[Int.random(in: faults.indices)]
            do {
                try host.inject(fault, into: service)
                result.injected[fault, default: 0] += 1
                lastInstance = target
            } catch {
                continue  // it failed by itself meanwhile (not running): pick the next instance
            }
        }
        result.duration = ContinuousClock.now - started
        return result
    }
}

/// Audit: once the load stopped, the host is back to its baseline (no abandoned instance left, descriptors
/// and memory), and the Maildirs hold exactly what was acknowledged.
struct ChaosAudit {
    /// The host's figures before the load.
    struct Baseline {
        var descriptors: Int
        var memory: Int

        init(of host: TestHost) {
            descriptors = host.openFileDescriptors
            memory = host.residentMemory
        }
    }

    let baseline: Baseline
    let descriptors: Int
    let memory: Int
    let counts: LoadClients.Counts
    let mail: MailAudit
    let smtp: ServiceStatus
    let http: ServiceStatus
    /// Children of the host that ended and were never reaped.
    let zombies: [Int32]

    init(host: TestHost, load: LoadClients, settled: HostStatus, baseline: Baseline) async throws {
        self.baseline = baseline
        zombies = ChildProcesses.children(of: host.pid).filter { ChildProcesses.state(of: $0) == "Z" }
        // Stalled instances come back and tear themselves down; then the host is back to its baseline.
        _ = try await Deadline.eventually("abandoned instances to end", timeout: .seconds(30)) {
            try host.status().host.supervisorProblem == nil ? true : nil
        }
        descriptors = try await Deadline.eventually("descriptors back to baseline", timeout: .seconds(15)) { () -> Int? in
            let now = host.openFileDescriptors
            return now <= baseline.descriptors + 2 ? now : nil
        }
        memory = host.residentMemory
        counts = load.counts
        mail = MailAudit(host: host, sent: load.messages)
        guard let smtp = settled.services.first(where: { $0.name == "smtp" }),
              let http = settled.services.first(where: { $0.name == "http" })
        else { throw TestHostError("smtp or http missing from the status: \(settled.services.map(\.name))") }
        self.smtp = smtp
        self.http = http
    }

    func report(isolation: String, injection: ChaosInjector.Result) -> String {
        """
        chaos (\(isolation)): \(injection.total) injections in \(injection.duration) (\(injection.summary)); \
        smtp restarts \(smtp.restarts), http restarts \(http.restarts)
          HTTP: \(counts.httpServed) served, \(counts.httpFailed) failed \(counts.httpFailures.prefix(3))
          SMTP: \(counts.smtpAttempts) attempts, \(counts.smtpAccepted) accepted (250), \(counts.smtpRefused) refused; mail: \(mail)
          host descriptors: \(baseline.descriptors) before, \(descriptors) after; host resident memory: \(baseline.memory / 1_048_576) MiB before, \(memory / 1_048_576) MiB after; zombies: \(zombies)
        """
    }

    func expectAll(isolation: String) {
        #expect(mail.isClean, "\(mail)")
        #expect(counts.smtpAccepted > 100, "the SMTP clients got through between failures")
        #expect(counts.httpServed > 100)
        #expect(zombies.isEmpty, "unreaped children: \(zombies)")
        if isolation != "shared" {
            #expect(counts.httpFailed == 0, "\(counts.httpFailures)")
            #expect(http.instance == 1)
        }
        #expect(memory < baseline.memory + 96 * 1_048_576, "memory \(memory) vs baseline \(baseline.memory)")
    }
}
