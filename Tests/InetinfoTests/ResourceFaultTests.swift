import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// Running out of disk space and of file descriptors: the host degrades with the right replies and
/// recovers, without a crash and without a partial message.
@Suite(.serialized, .timeLimit(.minutes(3))) struct ResourceFaultTests {
    @Test func aFullDiskGets452AndLeavesNoPartialMessage() async throws {
        // A 3 MiB tmpfs as the state directory (the tests run as root, as CI does).
        let mountPoint = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-fulldisk-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        let mount = try CommandResult.run("/bin/mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", mountPoint.path])
        try #require(mount.status == 0, "mount tmpfs: \(mount.stderr)")
        defer {
            _ = try? CommandResult.run("/bin/umount", [mountPoint.path])
            try? FileManager.default.removeItem(at: mountPoint)
        }
        var configuration = TestHost.Configuration(settings: ["http.enabled": "false"])
        configuration.stateDirectory = mountPoint
        try await TestHost.with(configuration) { host in
            let smtp = try SMTPTestClient(port: try host.port(of: "smtp"))
            #expect(try smtp.code() == "220")
            #expect(try smtp.exchange("EHLO c\r\n") == ["250"])
            var replies: [String] = []
            var sent: [String: LoadClients.SentMessage] = [:]
            for index in 0..<12 {
                let id = "full-\(index)"
                let content = LoadClients.message(id: id, size: 400_000)
                let reply = try smtp.sendMessage(from: "a@remote.test", to: ["big@localhost"], content: content, useBDAT: index % 2 == 1) ?? "EOF"
                replies.append(String(reply.prefix(9)))
                sent[id] = LoadClients.SentMessage(recipient: "big@localhost", content: content, acknowledged: reply.hasPrefix("250"))
            }
            print("full disk replies: \(replies)")
            #expect(replies.contains { $0.hasPrefix("250") }, "the first messages fit")
            #expect(replies.contains("452 4.3.1"), "then the disk is full: \(replies)")
            #expect(!replies.contains("EOF"), "the session survives")
            // Whatever was acknowledged is whole; nothing partial is in new/, nothing is left in the spool.
            let audit = MailAudit(host: host, sent: sent)
            #expect(audit.isClean, "\(audit)")
            #expect(host.spooledFiles().isEmpty)
            // Space freed: delivery works again, on the same session.
            for message in host.deliveredMessages(to: "big@localhost") { unlink(message.path) }
            let again = try smtp.sendMessage(from: "a@remote.test", to: ["big@localhost"], content: LoadClients.message(id: "after", size: 1000), useBDAT: false)
            #expect(again?.hasPrefix("250") == true)
            #expect(try host.service("smtp").instance == 1, "no failure, no restart")
            // The 64 MiB journal never fitted on this disk: the service said so and committed directly.
            #expect(host.log.contains("no space for the journal"))
        }
    }

    @Test func runningOutOfFileDescriptorsDegradesAndRecovers() async throws {
        // One client holds them all here: the per-client limit would otherwise refuse it long before.
        var configuration = TestHost.Configuration(settings: ["smtp.max-sessions-per-client": "1000"])
        configuration.launcher = ["/usr/bin/prlimit", "--nofile=128:128", "--"]
        try await TestHost.with(configuration) { host in
            let smtpPort = try host.port(of: "smtp")
            let httpPort = try host.port(of: "http")
            // Hold more connections than the host has descriptors for (the rest wait in the backlog).
            var held: [Int32] = []
            for _ in 0..<180 {
                if let fd = try? TCPTestSocket.connect(port: smtpPort, timeoutSeconds: 1) { held.append(fd) }
            }
            // The descriptors really ran out: the host holds (nearly) all 128.
            let exhausted = try await Deadline.eventually("the host to use up its descriptors", timeout: .seconds(10)) { () -> Int? in
                let open = host.openFileDescriptors
                return open >= 120 ? open : nil
            }
            // A request while the host is out of descriptors waits in the backlog or fails; it must bring
            // nothing down.
            let during: String
            do {
                during = "answered \(try TCPTestSocket.httpGet(port: httpPort).status)"
            } catch {
                during = "not answered (\(error))"
            }
            #expect(host.isRunning)
            for fd in held { close(fd) }
            // Recovered: new sessions and requests are served, by the same instances (no failure, no restart).
            let greeting = try await Deadline.eventually("an SMTP greeting after the descriptors were freed", timeout: .seconds(20)) { () -> String? in
                let client = try SMTPTestClient(port: smtpPort, timeoutSeconds: 3)
                return try client.reply()
            }
            #expect(greeting.hasPrefix("220"))
            let response = try await Deadline.eventually("an HTTP response", timeout: .seconds(20)) { try TCPTestSocket.httpGet(port: httpPort) }
            #expect(response.status == 200)
            let status = try await host.waitUntilRunning()
            print("descriptor exhaustion: \(held.count) connections held, \(exhausted) descriptors open in the host; a request meanwhile: \(during); afterwards smtp instance \(status.services[0].instance), http instance \(status.services[1].instance), restarts \(status.services.map(\.restarts))")
            #expect(status.services.allSatisfy { $0.instance == 1 && $0.restarts == 0 }, "degraded, not failed: \(status.services)")
            #expect(host.isRunning)
        }
    }
}
