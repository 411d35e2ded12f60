import Foundation
import HostControl
import InetinfoTestKit
import Testing

@Suite(.serialized, .timeLimit(.minutes(2))) struct SMTPServiceTests {
    @Test func aDataTransactionIsDeliveredDurablyWithAReceivedHeader() async throws {
        try await withHost { host in
            _ = try await host.waitUntilRunning()
            let smtp = try SMTPTestClient(port: try host.smtpPort())
            #expect(try smtp.code() == "220")
            #expect(try smtp.exchange("EHLO client.test\r\n") == ["250"])
            #expect(try smtp.exchange("MAIL FROM:<alice@remote.test>\r\nRCPT TO:<bob@localhost>\r\nDATA\r\n", replies: 3) == ["250", "250", "354"])
            try smtp.send("Subject: hello\r\n\r\n..dot\r\nbody\r\n.\r\n")
            let accepted = try #require(try smtp.reply())
            #expect(accepted.hasPrefix("250 2.0.0 Message accepted for delivery as M"))
            // The 250 came after the journal's flush; the message is in new/ a moment later (maildir waits for
            // the spool to empty), and nothing is left in the spool.
            let files = host.maildir("bob@localhost")
            #expect(files.count == 1)
            let content = try String(contentsOf: files[0], encoding: .utf8)
            #expect(content.hasPrefix("Return-Path: <alice@remote.test>\r\nReceived: from client.test ([127.0.0.1])"))
            #expect(content.hasSuffix("\r\nSubject: hello\r\n\r\n.dot\r\nbody\r\n"))
            #expect(host.spooledFiles().isEmpty)
            #expect(try smtp.exchange("RCPT TO:<x@elsewhere.test>\r\n") == ["503"])
            #expect(try smtp.exchange("MAIL FROM:<a@b>\r\nRCPT TO:<x@elsewhere.test>\r\n", replies: 2) == ["250", "550"])
            #expect(try smtp.exchange("QUIT\r\n") == ["221"])
        }
    }

    @Test func binaryChunksArriveByteForByte() async throws {
        try await withHost { host in
            _ = try await host.waitUntilRunning()
            let smtp = try SMTPTestClient(port: try host.smtpPort())
            _ = try smtp.reply()
            var chunk: [UInt8] = Array("Subject: bin\r\n\r\n".utf8) + (0...255).map { UInt8($0) }
            chunk += Array("\r\n.\r\nQUIT\r\n".utf8)
            try smtp.send("EHLO c\r\nMAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<carol@localhost>\r\nRCPT TO:<dave@localhost>\r\n")
            #expect(try (0..<4).map { _ in try smtp.code() } == ["250", "250", "250", "250"])
            try smtp.send(Array("BDAT \(chunk.count)\r\n".utf8) + chunk + Array("BDAT 0 LAST\r\n".utf8))
            #expect(try smtp.code() == "250")
            #expect(try smtp.code() == "250")
            for recipient in ["carol@localhost", "dave@localhost"] {
                let files = host.maildir(recipient)
                #expect(files.count == 1)
                let data = try Data(contentsOf: files[0])
                #expect(Array(data.suffix(chunk.count)) == chunk)
            }
        }
    }

    @Test func oversizedChunkIsDiscardedAndTheSessionStaysInSync() async throws {
        try await withHost(["--set", "smtp.max-message-size=1000"]) { host in
            _ = try await host.waitUntilRunning()
            let smtp = try SMTPTestClient(port: try host.smtpPort())
            _ = try smtp.reply()
            try smtp.send("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@localhost>\r\n")
            _ = try (0..<3).map { _ in try smtp.reply() }
            try smtp.send("BDAT 5000 LAST\r\n" + String(repeating: "x", count: 5000) + "NOOP\r\n")
            let refused = try #require(try smtp.reply())
            #expect(refused.hasPrefix("552 5.3.4"))
            #expect(try smtp.code() == "250")
            #expect(try smtp.exchange("RSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@localhost>\r\nBDAT 2 LAST\r\nok", replies: 4) == ["250", "250", "250", "250"])
            #expect(host.maildir("bob@localhost").count == 1)
        }
    }

    @Test(arguments: ["isolated", "shared"])
    func theMS02012ProbeIsAnsweredByDefaultAndReplayedOnRequest(isolation: String) async throws {
        let probe = "HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@localhost>\r\nBDAT 4\r\nb00mAUTH LOGIN\r\n"
        try await withHost(["--isolation", isolation]) { host in
            _ = try await host.waitUntilRunning()
            let smtp = try SMTPTestClient(port: try host.smtpPort())
            _ = try smtp.reply()
            try smtp.send(probe)
            let replies = try (0..<5).map { _ in try smtp.reply() ?? "EOF" }
            #expect(replies.last == "503 5.5.1 BDAT expected")
            let status = try host.status()
            #expect(status.services.map(\.instance) == [1, 1])
            #expect(status.services.allSatisfy { $0.lastFailure == nil })
        }
        try await withHost(["--isolation", isolation, "--simulate-ms02-012"]) { host in
            let before = try await host.waitUntilRunning()
            let bystander = try SMTPTestClient(port: try host.port(of: "smtp", in: before))
            _ = try bystander.reply()
            let smtp = try SMTPTestClient(port: try host.port(of: "smtp", in: before))
            _ = try smtp.reply()
            try smtp.send(probe)
            _ = try (0..<4).map { _ in try smtp.reply() }
            #expect(try smtp.reply() == nil, "the session is dropped")
            #expect(try bystander.reply() == nil, "every open SMTP session is dropped")
            let after = try await Deadline.eventually("smtp restarted", timeout: .seconds(10)) {
                let status = try host.status()
                return status.services[0].instance == 2 && status.allEnabledRunning ? status : nil
            }
            #expect(after.services[0].lastFailure?.reason == "ms02-012: AUTH inside BDAT transaction")
            #expect(after.services[1].instance == (isolation == "shared" ? 2 : 1))
            // The service is back: a new session is served.
            let again = try SMTPTestClient(port: try host.port(of: "smtp", in: after))
            #expect(try again.code() == "220")
        }
    }

    @Test func pythonSmtplibDeliversThroughData() async throws {
        try await withHost { host in
            _ = try await host.waitUntilRunning()
            let script = """
                import smtplib, sys, email.policy
                from email.message import EmailMessage
                m = EmailMessage(); m["Subject"] = "via smtplib"; m["From"] = "a@remote.test"; m["To"] = "erin@localhost"
                m.set_content("line one\\n.line with a leading dot\\n")
                with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
                    s.ehlo(); print(s.has_extn("chunking"), s.has_extn("pipelining"))
                    # CRLF line endings (the SMTP policy): bytes with bare LF are refused with 521.
                    refused = s.sendmail("a@remote.test", ["erin@localhost", "frank@localhost"], m.as_bytes(policy=email.policy.SMTP))
                    print(len(refused))
                    try:
                        s.sendmail("a@remote.test", ["erin@localhost"], m.as_bytes())
                        print("bare LF accepted")
                    except smtplib.SMTPDataError as error:
                        print(error.smtp_code)
                """
            let result = try CommandResult.run("/usr/bin/env", ["python3", "-c", script, String(try host.smtpPort())])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout == "True True\n0\n521\n")
            for recipient in ["erin@localhost", "frank@localhost"] {
                let files = host.maildir(recipient)
                #expect(files.count == 1)
                let content = try String(contentsOf: files[0], encoding: .utf8)
                #expect(content.contains("Subject: via smtplib"))
                // Stored as received, with the stuffed dot removed.
                #expect(content.contains("\r\nline one\r\n.line with a leading dot\r\n"))
            }
        }
    }

    /// With `direct` the message is in `new/` when the 250 comes; with `journal` it is in the journal, and
    /// the next start on the same state directory delivers it if the kill came first.
    @Test(arguments: ["journal", "direct"]) func anAcknowledgedMessageSurvivesSIGKILL(commit: String) async throws {
        try await withHost(["--set", "smtp.commit=\(commit)"]) { host in
            _ = try await host.waitUntilRunning()
            let smtp = try SMTPTestClient(port: try host.smtpPort())
            _ = try smtp.reply()
            let body = String(repeating: "durable line\r\n", count: 500)
            #expect(try smtp.exchange("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<gina@localhost>\r\nDATA\r\n", replies: 4) == ["250", "250", "250", "354"])
            try smtp.send(body + ".\r\n")
            #expect(try smtp.code() == "250")
            host.signal(SIGKILL)
            _ = try await host.waitForExit()
            var next = TestHost.Configuration(settings: ["http.enabled": "false", "smtp.commit": commit])
            next.stateDirectory = host.stateDirectory
            try await TestHost.with(next) { restarted in
                let delivered = restarted.deliveredMessages(to: "gina@localhost")
                #expect(delivered.count == 1)
                #expect(delivered.first.map { String(decoding: $0.content, as: UTF8.self).hasSuffix(body) } == true)
            }
        }
    }

    @Test func sessionLimitIdleTimeoutAndErrorLimit() async throws {
        try await withHost(["--set", "smtp.max-sessions=2", "--set", "smtp.idle-timeout=1", "--set", "smtp.max-bad-commands=2"]) { host in
            _ = try await host.waitUntilRunning()
            let port = try host.smtpPort()
            let first = try SMTPTestClient(port: port)
            let second = try SMTPTestClient(port: port)
            #expect(try first.code() == "220")
            #expect(try second.code() == "220")
            let third = try SMTPTestClient(port: port)
            #expect(try third.reply()?.hasPrefix("421 4.7.0") == true)
            // Idle for more than a second: 421 4.4.2 and closed.
            #expect(try first.reply()?.hasPrefix("421 4.4.2") == true)
            #expect(try first.reply() == nil)
            #expect(try second.reply()?.hasPrefix("421 4.4.2") == true)
            // The idle sessions are gone, so their slots are free again.
            let fourth = try await Deadline.eventually("a free session slot", timeout: .seconds(5)) { () -> SMTPTestClient? in
                let connection = try SMTPTestClient(port: port)
                return try connection.code() == "220" ? connection : nil
            }
            #expect(try fourth.exchange("BOGUS\r\nBOGUS\r\n", replies: 3) == ["500", "500", "421"])
        }
    }
}
