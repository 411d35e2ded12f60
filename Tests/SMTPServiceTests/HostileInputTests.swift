import NIOCore
import Testing
@testable import SMTPService

/// Input that once reached stored headers, ended DATA early or was refused where RFC 5321 says accept.
@Suite struct HostileInputTests {
    /// RFC 5321 §2.3.8: only CRLF ends a line; a bare LF ends the session with 521 (Postfix's
    /// `smtpd_forbid_bare_newline = normal`), whatever the read boundaries.
    @Test(arguments: [1, 3, 64])
    func aBareLineFeedInACommandEndsTheSession(pieces: Int) {
        var driver = EngineDriver()
        driver.send("EHLO c\r\n")
        let replies = driver.send("MAIL FROM:<a@b>\nRCPT TO:<bob@localhost>\r\n", pieces: pieces)
        #expect(replies == ["521 5.5.2 mx.test Error: bare <LF> received"])
        #expect(driver.closed)
    }

    /// CVE-2023-51764's class: `\n.\n` (and `\r\n.\n`, `\n.\r\n`) would end DATA here while another server
    /// reads on; the smuggled commands must never run and nothing of the transaction is delivered.
    @Test(arguments: ["hello\n.\nMAIL FROM:<x@y>\r\n", "hello\r\n.\nMAIL FROM:<x@y>\r\n", "hello\n.\r\nMAIL FROM:<x@y>\r\n",
                      "line one\r\nbare\nline\r\n.\r\n", "\n.\r\n"])
    func aBareLineFeedInDataEndsTheSessionAndDeliversNothing(content: String) {
        for pieces in [1, 2, 5, 200] {
            var driver = EngineDriver()
            driver.transaction()
            #expect(codes(driver.send("DATA\r\n")) == ["354"])
            let replies = driver.send(content + "QUIT\r\n", pieces: pieces)
            #expect(replies == ["521 5.5.2 mx.test Error: bare <LF> received"], "\(content.debugDescription) in \(pieces) pieces")
            #expect(driver.closed)
            #expect(driver.messages.isEmpty)
            #expect(driver.discarded == 1)
        }
    }

    @Test func crlfContentIsStillDeliveredWhateverTheReadBoundaries() {
        for pieces in [1, 2, 7, 50] {
            var driver = EngineDriver()
            driver.transaction()
            driver.send("DATA\r\n")
            let replies = driver.send("a\r\n\r\n..dot\r\nb\rc\r\n.\r\n", pieces: pieces)
            #expect(codes(replies) == ["250"])
            #expect(driver.messages.first.map { String(decoding: $0.1, as: UTF8.self) } == "a\r\n\r\n.dot\r\nb\rc\r\n")
        }
    }

    @Test func bdatChunksStayBinarySafe() {
        var driver = EngineDriver()
        driver.transaction()
        let chunk: [UInt8] = Array("a\nb\n.\nc\r".utf8) + [0, 0x0A]
        let replies = driver.send(Array("BDAT \(chunk.count) LAST\r\n".utf8) + chunk)
        #expect(codes(replies) == ["250"])
        #expect(driver.messages.first?.1 == chunk)
        #expect(!driver.closed)
    }

    @Test(arguments: ["EHLO a\rb\r\n", "HELO a\u{0}b\r\n", "EHLO a\u{7F}\r\n", "EHLO x\u{1B}[31m\r\n", "EHLO a\tb\r\n"])
    func controlOctetsInTheHeloNameAreRefused(command: String) {
        var driver = EngineDriver()
        #expect(codes(driver.send(command)) == ["501"])
        #expect(driver.send(command).first?.hasPrefix("501 5.5.2") == true)
        // No name was taken: a transaction still needs a proper greeting.
        #expect(codes(driver.send("MAIL FROM:<a@b>\r\n")) == ["503"])
    }

    @Test func controlOctetsInAddressesAreRefused() {
        var driver = EngineDriver()
        driver.send("EHLO c\r\n")
        #expect(driver.send("MAIL FROM:<a\u{0}b@remote.test>\r\n") == ["501 5.1.7 Bad sender address syntax"])
        #expect(driver.send("MAIL FROM:<a\rReceived:forged@remote.test>\r\n") == ["501 5.1.7 Bad sender address syntax"])
        #expect(codes(driver.send("MAIL FROM:<a@remote.test>\r\n")) == ["250"])
        #expect(driver.send("RCPT TO:<bob\u{1}@localhost>\r\n") == ["501 5.1.3 Bad recipient address syntax"])
        #expect(driver.send("RCPT TO:<bob@local\u{7F}host>\r\n") == ["501 5.1.3 Bad recipient address syntax"])
        #expect(codes(driver.send("RCPT TO:<bob@localhost>\r\n")) == ["250"])
    }

    /// RFC 5321 §4.5.1: `<Postmaster>` without a domain must be accepted.
    @Test func postmasterWithoutADomainIsAccepted() {
        var driver = EngineDriver()
        driver.send("EHLO c\r\nMAIL FROM:<a@remote.test>\r\n")
        #expect(driver.send("RCPT TO:<Postmaster>\r\n") == ["250 2.1.5 Recipient OK"])
        driver.send("DATA\r\nhi\r\n.\r\n")
        // mx.test is not an accepted domain here: localhost is.
        #expect(driver.messages.first?.0.recipients == ["postmaster@localhost"])
    }

    /// RFC 5321 §4.1.1.3 and appendix C: a source route is accepted and ignored.
    @Test func aSourceRouteIsIgnored() {
        var driver = EngineDriver()
        driver.send("EHLO c\r\n")
        #expect(codes(driver.send("MAIL FROM:<@relay.test:a@remote.test>\r\n")) == ["250"])
        #expect(driver.send("RCPT TO:<@relay.test,@other.test:bob@localhost>\r\n") == ["250 2.1.5 Recipient OK"])
        #expect(codes(driver.send("RCPT TO:<@relay.test>\r\n")) == ["501"])
        driver.send("DATA\r\nhi\r\n.\r\n")
        #expect(driver.messages.first?.0.recipients == ["bob@localhost"])
        #expect(driver.messages.first?.0.sender == "a@remote.test")
    }

    /// `smtp.recipients = existing`: unknown local parts get 550 5.1.1; postmaster never does.
    @Test func onlyExistingMailboxesWhenAsked() {
        var options = SMTPSession.Options(hostName: "mx.test", domains: ["localhost"])
        options.mailboxExists = { $0 == "alice@localhost" }
        var driver = EngineDriver()
        driver.session = SMTPSession(options: options)
        driver.send("EHLO c\r\nMAIL FROM:<a@remote.test>\r\n")
        #expect(driver.send("RCPT TO:<mallory@localhost>\r\n") == ["550 5.1.1 <mallory@localhost>: Recipient address rejected: no such mailbox"])
        #expect(codes(driver.send("RCPT TO:<alice@localhost>\r\n")) == ["250"])
        #expect(codes(driver.send("RCPT TO:<postmaster@localhost>\r\n")) == ["250"])
        #expect(codes(driver.send("RCPT TO:<Postmaster>\r\n")) == ["250"])
    }

    /// Local parts that could leave their Maildir, or name none, are refused at RCPT (docs/smtp.md).
    @Test(arguments: ["../etc", "a/b", "a\\b", ".hidden", String(repeating: "x", count: 65), "a b"])
    func localPartsThatCouldEscapeTheMaildirAreRefused(localPart: String) {
        var driver = EngineDriver()
        driver.send("EHLO c\r\nMAIL FROM:<a@remote.test>\r\n")
        let reply = driver.send("RCPT TO:<\(localPart)@localhost>\r\n")
        // A space ends the path (syntax error); the rest name no safe directory.
        #expect(reply.first?.hasPrefix(localPart.contains(" ") ? "501" : "550 5.1.1") == true, "\(localPart): \(reply)")
        #expect(codes(driver.send("RCPT TO:<\(String(repeating: "x", count: 64))@localhost>\r\n")) == ["250"])
    }
}
