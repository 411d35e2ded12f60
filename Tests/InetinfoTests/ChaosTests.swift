import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// Hundreds of mixed failures injected into `smtp` while HTTP and SMTP clients keep working.
/// `INETINFO_CHAOS_INJECTIONS` scales it up for a soak (see docs/testing.md).
@Suite(.serialized, .timeLimit(.minutes(10))) struct ChaosTests {
    static var injections: Int {
        ProcessInfo.processInfo.environment["INETINFO_CHAOS_INJECTIONS"].flatMap(Int.init) ?? 300
    }

    @Test(arguments: ["isolated", "shared"])
    func smtpFailuresLoseNoMailAndInIsolationNeverTouchHTTP(isolation: String) async throws {
        let webRoot = FileManager.default.temporaryDirectory.appendingPathComponent("chaos-www-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: webRoot, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: webRoot) }
        let files = ["/small.txt": Data("small file\n".utf8),
                     "/large.bin": Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 * 7) })]
        for (path, data) in files { try data.write(to: webRoot.appendingPathComponent(String(path.dropFirst()))) }

        var configuration = TestHost.Configuration(isolation: isolation, webRoot: webRoot.path, settings: [
            "supervisor.max-restarts": "100000", "supervisor.backoff-initial": "5", "supervisor.backoff-max": "50",
            "smtp.liveness-interval": "25", "smtp.liveness-timeout": "150", "smtp.startup-timeout": "400",
            "http.access-log": "off",
        ])
        configuration.mode = .childProcess()
        try await TestHost.with(configuration) { host in
            let httpPort = try host.port(of: "http")
            let baselineDescriptors = host.openFileDescriptors
            let baselineMemory = host.residentMemory

            let load = LoadClients()
            load.startHTTP(clients: 2, port: httpPort, files: files)
            load.startSMTP(clients: 3, port: { try? host.port(of: "smtp") }, tag: "chaos-\(isolation)")

            let faults: [TestHost.Fault] = [.throw, .throw, .stall, .listener, .slowStart]
            var injected: [TestHost.Fault: Int] = [:]
            let started = ContinuousClock.now
            var lastInstance = 0
            while injected.values.reduce(0, +) < Self.injections {
                // Each injection hits a fresh instance, so every one is a failure of its own.
                let target = try await Deadline.eventually("a new smtp instance running", timeout: .seconds(30)) { () -> Int? in
                    let smtp = try host.service("smtp")
                    return smtp.state == .running && smtp.instance > lastInstance ? smtp.instance : nil
                }
                try await Task.sleep(for: .milliseconds(Int.random(in: 5...60)))
                let fault = faults.randomElement()!
                do {
                    try host.inject(fault, into: "smtp")
                    injected[fault, default: 0] += 1
                    lastInstance = target
                } catch {
                    continue  // it failed by itself meanwhile (not running): pick the next instance
                }
            }
            let chaosDuration = ContinuousClock.now - started
            // Let clients run against a settled service, then stop them.
            let settled = try await host.waitUntilRunning(timeout: .seconds(30))
            try await Task.sleep(for: .milliseconds(300))
            await load.stop()

            // Stalled instances come back and tear themselves down; then the host is back to its baseline.
            _ = try await Deadline.eventually("abandoned instances to end", timeout: .seconds(30)) {
                try host.status().host.supervisorProblem == nil ? true : nil
            }
            let descriptors = try await Deadline.eventually("descriptors back to baseline", timeout: .seconds(15)) { () -> Int? in
                let now = host.openFileDescriptors
                return now <= baselineDescriptors + 2 ? now : nil
            }
            let memory = host.residentMemory
            let counts = load.counts
            let audit = MailAudit(host: host, sent: load.messages)
            let smtp = settled.services.first { $0.name == "smtp" }!
            let http = settled.services.first { $0.name == "http" }!
            print("""
                chaos (\(isolation)): \(injected.values.reduce(0, +)) injections in \(chaosDuration) \
                (\(injected.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }.joined(separator: ", "))); \
                smtp restarts \(smtp.restarts), http restarts \(http.restarts)
                  HTTP: \(counts.httpServed) served, \(counts.httpFailed) failed \(counts.httpFailures.prefix(3))
                  SMTP: \(counts.smtpAttempts) attempts, \(counts.smtpAccepted) accepted (250), \(counts.smtpRefused) refused; mail: \(audit)
                  descriptors: \(baselineDescriptors) before, \(descriptors) after; resident memory: \(baselineMemory / 1_048_576) MiB before, \(memory / 1_048_576) MiB after
                """)
            #expect(audit.isClean, "\(audit)")
            #expect(counts.smtpAccepted > 100, "the SMTP clients got through between failures")
            #expect(counts.httpServed > 100)
            if isolation == "isolated" {
                #expect(counts.httpFailed == 0, "\(counts.httpFailures)")
                #expect(http.instance == 1)
            }
            #expect(memory < baselineMemory + 96 * 1_048_576, "memory \(memory) vs baseline \(baselineMemory)")
        }
    }
}
