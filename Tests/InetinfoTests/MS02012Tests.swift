import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// The statements of the 2002 bulletin, each shown on this host (docs/ms02-012.md maps them).
@Suite(.serialized, .timeLimit(.minutes(2))) struct MS02012Tests {
    static let probe = "HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@localhost>\r\nBDAT 4\r\nb00mAUTH LOGIN\r\n"

    func sendProbe(to host: TestHost) throws -> [String] {
        let client = try SMTPTestClient(port: try host.port(of: "smtp"))
        _ = try client.reply()
        try client.send(Self.probe)
        return try (0..<5).map { _ in try client.reply() ?? "(closed)" }
    }

    @Test func theReplayReadsSendsAndDeletesNoMail() async throws {
        try await TestHost.with(.init(simulateMS02012: true)) { host in
            let client = try SMTPTestClient(port: try host.port(of: "smtp"))
            _ = try client.reply()
            _ = try client.exchange("EHLO c\r\n")
            for index in 0..<2 {
                let reply = try client.sendMessage(from: "a@remote.test", to: ["bob@localhost"],
                                                   content: LoadClients.message(id: "kept-\(index)", size: 500), useBDAT: index == 1)
                #expect(reply?.hasPrefix("250") == true)
            }
            let before = host.deliveredMessages(to: "bob@localhost")
            let replies = try sendProbe(to: host)
            #expect(replies.last == "(closed)")
            try await host.waitForState("smtp", .running, instance: 2)
            // Nothing was read out, sent, added or deleted: the Maildir is exactly as it was, no new mailbox
            // appeared, and the failed transaction's chunk ("b00m") was thrown away.
            #expect(host.deliveredMessages(to: "bob@localhost") == before)
            #expect(host.mailboxes() == ["bob@localhost"])
            #expect(host.spooledFiles().isEmpty)
            // The failure is the instance's alone: the host process, its pid and its control plane go on.
            let status = try host.status()
            #expect(status.host.pid == host.pid)
            #expect(status.services.first { $0.name == "smtp" }?.lastFailure?.reason == "ms02-012: AUTH inside BDAT transaction")
        }
    }

    @Test func anAdministratorCanRestartTheFailedService() async throws {
        // No automatic restart left (intensity 0): the service stays failed until an operator acts.
        try await TestHost.with(.init(simulateMS02012: true, settings: ["smtp.max-restarts": "0"])) { host in
            _ = try sendProbe(to: host)
            try await host.waitForState("smtp", .failed, instance: 1)
            #expect(try host.status().host.degraded)
            let reply = try host.client.send(ControlRequest(command: .start, service: "smtp"))
            #expect(reply.ok)
            try await host.waitForState("smtp", .running, instance: 2)
            let client = try SMTPTestClient(port: try host.port(of: "smtp"))
            #expect(try client.code() == "220")
        }
    }

    @Test func aHostWithSMTPDisabledIsNotExposed() async throws {
        let port = try Self.freePort()
        var configuration = TestHost.Configuration(simulateMS02012: true, settings: ["smtp.enabled": "false"])
        configuration.arguments = ["--smtp-listen", "127.0.0.1:\(port)"]
        try await TestHost.with(configuration) { host in
            let smtp = try host.service("smtp")
            #expect(smtp.enabled == false)
            #expect(smtp.listen.isEmpty)
            #expect(smtp.state == .stopped)
            #expect(try host.status().allEnabledRunning)
            // Nothing listens where SMTP would: the probe cannot even be sent.
            #expect(throws: TCPConnectError.self) { try TCPTestSocket.connect(port: port, timeoutSeconds: 1) }
            #expect(try TCPTestSocket.httpGet(port: try host.port(of: "http")).status == 200)
            #expect(try host.events().allSatisfy { $0.service != "smtp" })
        }
    }

    /// A loopback port nothing listens on right now.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(fd, pointer, length) == 0 else { return -1 }
                return getsockname(fd, pointer, &length)
            }
        }
        guard bound == 0 else { throw TestHostError("cannot find a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
