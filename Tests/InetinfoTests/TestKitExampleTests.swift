import Foundation
import InetinfoTestKit
import Testing

// The example of docs/testing.md, kept compiling and passing here.
@Test func smtpComesBackAndKeepsTheMail() async throws {
    try await TestHost.with(.init(settings: ["supervisor.backoff-max": "50"])) { host in
        let client = try SMTPTestClient(port: try host.port(of: "smtp"))
        _ = try client.reply()
        _ = try client.exchange("EHLO me\r\n")
        let reply = try client.sendMessage(from: "a@example.org", to: ["bob@localhost"],
                                           content: Data("Subject: hi\r\n\r\nhello\r\n".utf8), useBDAT: true)
        #expect(reply?.hasPrefix("250") == true)

        try host.inject(.throw, into: "smtp")
        try await host.waitForState("smtp", .running, instance: 2)

        #expect(host.deliveredMessages(to: "bob@localhost").map(\.body) == [Data("Subject: hi\r\n\r\nhello\r\n".utf8)])
        #expect(try host.service("http").instance == 1)
    }
}

@Test func inProcessHostsWorkToo() async throws {
    try await TestHost.with(.init(mode: .inProcess, settings: ["http.enabled": "false"])) { host in
        try host.inject(.listener, into: "smtp")
        try await host.waitForState("smtp", .running, instance: 2)
        #expect(throws: TestHostError.self) { try host.inject(.trap, into: "smtp") }
        let client = try SMTPTestClient(port: try host.port(of: "smtp"))
        #expect(try client.code() == "220")
        await host.stop()
        #expect(!FileManager.default.fileExists(atPath: host.directory.path))
    }
}
