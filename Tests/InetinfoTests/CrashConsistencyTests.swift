import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// The whole host killed with SIGKILL at random moments under SMTP load, then started again on the same
/// state directory: nothing acknowledged is lost, nothing half-written is in `new/`, the spool is cleaned —
/// in both commit modes (with the journal, what was acknowledged and not yet delivered is replayed).
@Suite(.serialized, .timeLimit(.minutes(10))) struct CrashConsistencyTests {
    static var cycles: Int {
        ProcessInfo.processInfo.environment["INETINFO_KILL_CYCLES"].flatMap(Int.init) ?? 50
    }

    @Test(arguments: ["journal", "direct"]) func killNineDuringDeliveryLosesNothingAcknowledged(commit: String) async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("kill9-state-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: state) }
        var configuration = TestHost.Configuration(settings: ["http.enabled": "false", "smtp.commit": commit])
        configuration.stateDirectory = state
        var sent: [String: LoadClients.SentMessage] = [:]
        var leftovers = 0
        for cycle in 1...Self.cycles {
            let host = try await TestHost.start(configuration)
            // The first instance removed what the previous kill left in the spool.
            #expect(host.spooledFiles().isEmpty)
            let port = try host.port(of: "smtp")
            let load = LoadClients()
            load.startSMTP(clients: 4, port: { port }, tag: "kill\(cycle)", size: Int.random(in: 500...40_000))
            try await Task.sleep(for: .milliseconds(Int.random(in: 30...300)))
            try await host.kill()
            leftovers += host.spooledFiles().count
            await load.stop()
            sent.merge(load.messages) { $1 }
            await host.stop()  // removes the host's own directory, not the shared state directory
        }
        try await TestHost.with(configuration) { final in
            let tmpAfterRestart = final.spooledFiles().count
            let audit = MailAudit(host: final, sent: sent)
            print("kill -9 (smtp.commit = \(commit)): \(Self.cycles) cycles; \(sent.count) messages attempted; \(audit); unfinished files the kills left in the spool \(leftovers), after the last restart \(tmpAfterRestart)")
            #expect(audit.isClean, "\(audit)")
            #expect(audit.acknowledged > Self.cycles, "messages were acknowledged between kills")
            #expect(tmpAfterRestart == 0)
            // Otherwise the clean-up above was never put to the test.
            #expect(leftovers > 0, "no kill landed while a message was being received")
        }
    }
}
