import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// Crash records and quarantine (docs/operations.md, "Crash records and quarantine"): every failure
/// leaves a record of what died and what its connections had sent, the suspect's input replays as a
/// test, and an address whose input keeps crashing a service is refused by every service.
@Suite(.serialized, .timeLimit(.minutes(5))) struct CrashForensicsTests {
    static let probe = Data("HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@localhost>\r\nBDAT 4\r\nb00mAUTH LOGIN\r\n".utf8)

    static func configuration(isolation: String, _ settings: [String: String] = [:]) -> TestHost.Configuration {
        TestHost.Configuration(isolation: isolation, simulateMS02012: true, settings: [
            "supervisor.backoff-initial": "5", "supervisor.backoff-max": "50", "supervisor.max-restarts": "100000",
            "http.access-log": "off",
        ].merging(settings) { $1 })
    }

    /// A message from 127.0.0.3, the bystander: it must be served all along.
    func deliver(_ host: TestHost, id: String) throws -> String? {
        let client = try SMTPTestClient(port: try host.port(of: "smtp"), source: "127.0.0.3")
        guard try client.code() == "220" else { return "no greeting" }
        _ = try client.exchange("EHLO bystander\r\n")
        return try client.sendMessage(from: "a@remote.test", to: ["bob@localhost"],
                                      content: LoadClients.message(id: id, size: 300), useBDAT: false)
    }

    @Test func theSeedsProbeIsRecordedQuarantinedAfterTwoCrashesAndReplaysAsARegressionTest() async throws {
        var exported = Data()
        try await TestHost.with(Self.configuration(isolation: "process")) { host in
            let http = try host.service("http")
            for round in 1...2 {
                let before = try host.service("smtp")
                let answer = try host.replay(Self.probe, to: "smtp", from: "127.0.0.2")
                #expect(!answer.contains("AUTH"), "the probe's AUTH is never answered: the worker dies on it")
                try await host.waitForState("smtp", .running, instance: before.instance + 1, timeout: .seconds(30))
                #expect(try deliver(host, id: "bystander-\(round)")?.hasPrefix("250") == true)
                _ = round
            }
            // Two crashes with 127.0.0.2 as the suspect: it is refused at connect, by every service, and the
            // SMTP worker is not touched. (The second record, and with it the strike, is written once the
            // crashed worker is gone, which may be just after its replacement runs.)
            let quarantined = try await Deadline.eventually("127.0.0.2 quarantined", timeout: .seconds(10)) {
                let entries = try host.quarantine()
                return entries.isEmpty ? nil : entries
            }
            #expect(quarantined.map(\.address) == ["127.0.0.2"])
            #expect(quarantined.first?.crashes.count == 2)
            let smtp = try host.service("smtp")
            let refused = try host.replay(Self.probe, to: "smtp", from: "127.0.0.2")
            #expect(refused.hasPrefix("554 5.7.1 "), "\(refused)")
            #expect(!refused.contains("250"), "not one byte of its input was read")
            let refusedHTTP = try host.replay(Data("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), to: "http", from: "127.0.0.2")
            #expect(refusedHTTP.hasPrefix("HTTP/1.1 403 Forbidden"), "\(refusedHTTP)")
            let after = try host.service("smtp")
            #expect(after.instance == smtp.instance && after.pid == smtp.pid && after.state == .running)
            #expect(try deliver(host, id: "bystander-3")?.hasPrefix("250") == true)
            #expect(try TCPTestSocket.httpGet(port: try host.port(of: "http")).status == 200)
            let httpAfter = try host.service("http")
            #expect(httpAfter.instance == http.instance && httpAfter.pid == http.pid, "HTTP never noticed")
            #expect(try host.status().quarantine.map(\.address) == ["127.0.0.2"])

            // What the records say: the worker, its signal, the suspect and its input byte for byte.
            let crashes = try host.crashes()
            #expect(crashes.count == 2)
            #expect(crashes.allSatisfy { $0.service == "smtp" && $0.signal == "SIGILL" && $0.suspect?.hasPrefix("127.0.0.2:") == true })
            #expect(Set(crashes.map(\.id)) == Set(quarantined.first?.crashes ?? []))
            let record = try host.crash(try #require(crashes.first).id)
            #expect(record.reason == "worker exited on signal SIGILL")
            #expect(record.pid != nil && record.pid != host.pid)
            let suspect = try #require(record.suspect)
            #expect(suspect.lastInput == Self.probe)
            #expect(suspect.bytesIn == UInt64(Self.probe.count) && suspect.bytesOut > 0)
            #expect(record.backtrace?.contains("Fatal error: MS02-012 replay") == true, "\(record.backtrace ?? "no crash report")")
            #expect(record.events.contains { $0.service == "smtp" && $0.to == .running })
            exported = try host.exportedInput(of: record.id)
        }
        // The exported input against a patched host (no replay of the flaw): the regression test passes.
        #expect(exported == Self.probe)
        try await TestHost.with(TestHost.Configuration(isolation: "process")) { patched in
            let answer = try patched.replay(exported, to: "smtp")
            #expect(answer.contains("503 5.5.1"), "\(answer)")
            #expect(try patched.crashes().isEmpty)
        }
    }

    @Test(arguments: ["isolated", "shared"])
    func aFailureInTheHostsOwnProcessRecordsTheOpenConnectionsAndTheSuspect(isolation: String) async throws {
        try await TestHost.with(Self.configuration(isolation: isolation)) { host in
            let bystander = try SMTPTestClient(port: try host.port(of: "smtp"), source: "127.0.0.3")
            _ = try bystander.reply()
            _ = try bystander.exchange("EHLO bystander\r\n")
            _ = try host.replay(Self.probe, to: "smtp", from: "127.0.0.2")
            try await host.waitForState("smtp", .running, instance: 2)
            let crash = try await Deadline.eventually("a crash record", timeout: .seconds(10)) { try host.crashes().first }
            let record = try host.crash(crash.id)
            #expect(record.reason == "ms02-012: AUTH inside BDAT transaction")
            #expect(record.pid == host.pid && record.signal == nil && record.exitStatus == nil)
            #expect(record.suspect?.lastInput == Self.probe)
            let other = try #require(record.connections.first { $0.peer.hasPrefix("127.0.0.3:") })
            #expect(!other.suspect)
            #expect(other.lastInput == Data("EHLO bystander\r\n".utf8))

            // A failure that no input caused has no suspect, and strikes no one.
            try host.inject(.throw, into: "http")
            try await host.waitForState("http", .running, instance: isolation == "shared" ? 3 : 2)
            let records = try await Deadline.eventually("the http record", timeout: .seconds(10)) {
                try host.crashes().first { $0.service == "http" }
            }
            #expect(records.suspect == nil && records.reason == "injected fault: throw")
            #expect(try host.quarantine().isEmpty, "one crash is not enough")
        }
    }

    @Test func aHostThatDiedLeavesItsOpenConnectionsForTheNextStart() async throws {
        let host = try await TestHost.start(Self.configuration(isolation: "isolated"))
        let client = try SMTPTestClient(port: try host.port(of: "smtp"), source: "127.0.0.3")
        _ = try client.reply()
        _ = try client.exchange("HELO dying\r\n")
        try await host.kill()
        let next = try host.relaunch()
        do {
            _ = try await next.waitUntilRunning()
            let crash = try #require(try next.crashes().first { $0.service == "smtp" })
            let record = try next.crash(crash.id)
            #expect(record.service == "smtp" && record.reason.contains("ended while this instance ran"), "\(record.reason)")
            #expect(record.connections.map(\.lastInput) == [Data("HELO dying\r\n".utf8)])
            // HTTP's instance died with the host too, without a connection: a record of its own.
            let all = try next.crashes()
            #expect(all.count == 2 && Set(all.map(\.service)) == ["smtp", "http"], "\(all)")
        } catch {
            await next.stop()
            throw error
        }
        await next.stop()
    }

    @Test func theQuarantineExpiresIsReleasedByTheOperatorAndSparesTheAllowList() async throws {
        let settings = ["supervisor.quarantine-time": "2", "supervisor.quarantine-allow": "127.0.0.4"]
        try await TestHost.with(Self.configuration(isolation: "isolated", settings)) { host in
            func crash(from source: String) async throws {
                let before = try host.service("smtp").instance
                _ = try host.replay(Self.probe, to: "smtp", from: source)
                try await host.waitForState("smtp", .running, instance: before + 1)
            }
            func greeting(from source: String) throws -> String? {
                try SMTPTestClient(port: try host.port(of: "smtp"), source: source).reply()
            }
            func quarantined() async throws -> [String] {
                try await Deadline.eventually("a quarantine", timeout: .seconds(10)) {
                    let entries = try host.quarantine()
                    return entries.isEmpty ? nil : entries.map(\.address)
                }
            }
            try await crash(from: "127.0.0.2")
            try await crash(from: "127.0.0.2")
            #expect(try await quarantined() == ["127.0.0.2"])
            #expect(try greeting(from: "127.0.0.2")?.hasPrefix("554 5.7.1") == true)
            #expect(try greeting(from: "127.0.0.3")?.hasPrefix("220") == true)
            // Expiry (quarantine-time = 2 s).
            _ = try await Deadline.eventually("the quarantine to expire", timeout: .seconds(5)) {
                try host.quarantine().isEmpty ? true : nil
            }
            #expect(try greeting(from: "127.0.0.2")?.hasPrefix("220") == true)
            // Release by the operator.
            try await crash(from: "127.0.0.2")
            try await crash(from: "127.0.0.2")
            #expect(try await quarantined() == ["127.0.0.2"])
            try host.release("127.0.0.2")
            #expect(try greeting(from: "127.0.0.2")?.hasPrefix("220") == true)
            #expect(throws: (any Error).self) { try host.release("127.0.0.2") }
            // The allow list.
            try await crash(from: "127.0.0.4")
            try await crash(from: "127.0.0.4")
            // Both records written (each with its strike, had the address not been allowed), and no quarantine.
            _ = try await Deadline.eventually("two records naming 127.0.0.4", timeout: .seconds(10)) {
                try host.crashes().filter { $0.suspect?.hasPrefix("127.0.0.4:") == true }.count == 2 ? true : nil
            }
            #expect(try host.quarantine().isEmpty)
            #expect(try greeting(from: "127.0.0.4")?.hasPrefix("220") == true)
        }
    }

    @Test func retentionKeepsTheNewestRecordsWithinCountAndSize() async throws {
        try await TestHost.with(Self.configuration(isolation: "isolated", ["crashes.keep": "3"])) { host in
            for instance in 1...6 {
                try host.inject(.throw, into: "http")
                try await host.waitForState("http", .running, instance: instance + 1)
                _ = try await Deadline.eventually("record \(instance)", timeout: .seconds(10)) {
                    try host.crashes().contains { $0.instance == instance } ? true : nil
                }
            }
            #expect(try host.crashes().map(\.instance) == [4, 5, 6])
            let onDisk = try FileManager.default.contentsOfDirectory(atPath: host.stateDirectory.path + "/crashes")
            #expect(onDisk.count == 3, "\(onDisk)")
        }
    }
}
