import NIOCore
import Testing
@testable import SMTPService

/// Drives the pure engine like the handler does: deliveries succeed at once, content is collected.
struct EngineDriver {
    var session: SMTPSession
    var replies: [String] = []
    var messages: [(Envelope, [UInt8])] = []
    var current: (Envelope, [UInt8])?
    var failure: String?
    var closed = false
    var discarded = 0

    init(simulate: Bool = false, maxSize: Int = 1000, maxBad: Int = 10) {
        var options = SMTPSession.Options(hostName: "mx.test", domains: ["localhost", "example.org"])
        options.limits.maxMessageSize = maxSize
        options.limits.maxBadCommands = maxBad
        options.simulateMS02012 = simulate
        session = SMTPSession(options: options)
    }

    /// Feeds `text` (split into `pieces` reads) and returns the replies it produced.
    @discardableResult
    mutating func send(_ bytes: [UInt8], pieces: Int = 1) -> [String] {
        let before = replies.count
        let size = max(1, (bytes.count + pieces - 1) / pieces)
        var offset = 0
        while offset < bytes.count {
            var buffer = ByteBuffer(bytes: bytes[offset..<min(offset + size, bytes.count)])
            offset += size
            // As the handler does: again until the read is consumed (the engine stops where content ends).
            while true {
                let before = buffer.readableBytes
                perform(session.receive(&buffer))
                if session.isAwaitingDelivery {
                    messages.append(current!)
                    current = nil
                    perform(session.deliveryFinished(.delivered(id: "ID")))
                    continue
                }
                guard buffer.readableBytes > 0, buffer.readableBytes < before, !session.isClosed else { break }
            }
        }
        return Array(replies[before...])
    }

    @discardableResult
    mutating func send(_ text: String, pieces: Int = 1) -> [String] { send(Array(text.utf8), pieces: pieces) }

    mutating func perform(_ actions: [SMTPSession.Action]) {
        for action in actions {
            switch action {
            case .reply(let text): replies.append(contentsOf: text.components(separatedBy: "\r\n"))
            case .startMessage(let envelope): current = (envelope, [])
            case .messageData(let buffer): current!.1 += buffer.readableBytesView
            case .commitMessage: break
            case .discardMessage:
                current = nil
                discarded += 1
            case .close: closed = true
            case .simulatedFailure(let reason): failure = reason
            }
        }
    }

    mutating func transaction() {
        send("EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<bob@localhost>\r\n")
    }
}

func codes(_ replies: [String]) -> [String] { replies.map { String($0.prefix(3)) } }

@Suite struct SMTPCommandTests {
    @Test func greetingAndEhloAdvertiseTheExtensions() {
        var driver = EngineDriver()
        #expect(driver.session.greeting == "220 mx.test ESMTP inetinfo")
        let replies = driver.send("EHLO client.test\r\n")
        #expect(replies == ["250-mx.test greets client.test", "250-PIPELINING", "250-SIZE 1000", "250-8BITMIME",
                            "250-BINARYMIME", "250-CHUNKING", "250-ENHANCEDSTATUSCODES", "250 HELP"])
        #expect(driver.send("HELO client.test\r\n") == ["250 mx.test"])
    }

    @Test func everyCommandGetsItsReply() {
        var driver = EngineDriver()
        #expect(codes(driver.send("MAIL FROM:<a@b>\r\n")) == ["503"])
        #expect(driver.send("EHLO\r\n") == ["501 5.5.4 Syntax: EHLO hostname"])
        driver.send("EHLO c\r\n")
        #expect(driver.send("RCPT TO:<bob@localhost>\r\n") == ["503 5.5.1 Need MAIL before RCPT"])
        #expect(driver.send("MAIL FROM:<>\r\n") == ["250 2.1.0 Sender OK"])
        #expect(driver.send("MAIL FROM:<x@y>\r\n") == ["503 5.5.1 Sender already specified"])
        #expect(driver.send("DATA\r\n") == ["503 5.5.1 Need RCPT command"])
        #expect(driver.send("RCPT TO:<eve@elsewhere.test>\r\n") == ["550 5.7.1 Relaying denied"])
        #expect(driver.send("RCPT TO:<../etc@localhost>\r\n") == ["550 5.1.1 Mailbox name not allowed"])
        #expect(driver.send("RCPT TO:<Bob@LocalHost>\r\n") == ["250 2.1.5 Recipient OK"])
        #expect(driver.send("VRFY bob\r\n") == ["252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"])
        #expect(codes(driver.send("HELP\r\n")) == ["214"])
        #expect(driver.send("NOOP\r\n") == ["250 2.0.0 OK"])
        #expect(driver.send("XYZZY\r\n") == ["500 5.5.2 Command not recognized"])
        // RFC 5321 §4.2.4: a command that exists but is not offered here is 502, not 500.
        #expect(driver.send("EXPN staff\r\n") == ["502 5.5.1 Command not implemented"])
        #expect(driver.send("AUTH LOGIN\r\n") == ["502 5.5.1 Command not implemented"])
        // No SMTPUTF8: non-ASCII addresses are refused as RFC 6531 says, for the recipient and the sender.
        #expect(driver.send("RCPT TO:<jöhn@localhost>\r\n") == ["553 5.6.7 Non-ASCII addresses are not permitted (no SMTPUTF8)"])
        #expect(driver.send("RSET\r\n") == ["250 2.0.0 OK"])
        #expect(driver.send("RCPT TO:<bob@localhost>\r\n") == ["503 5.5.1 Need MAIL before RCPT"])
        #expect(driver.send("QUIT\r\n") == ["221 2.0.0 mx.test closing connection"])
        #expect(driver.closed)
    }

    @Test func mailParametersAreChecked() {
        var driver = EngineDriver(maxSize: 1000)
        driver.send("EHLO c\r\n")
        #expect(driver.send("MAIL FROM:<a@b> SIZE=1001\r\n") == ["552 5.3.4 Message size exceeds fixed maximum message size (1000 octets)"])
        #expect(driver.send("MAIL FROM:<a@b> SIZE=-1\r\n") == ["501 5.5.4 Malformed SIZE parameter"])
        // RFC 1870: size-value is 1*20DIGIT, leading zeros and all.
        #expect(driver.send("MAIL FROM:<a@b> SIZE=99999999999999999999\r\n") == ["552 5.3.4 Message size exceeds fixed maximum message size (1000 octets)"])
        #expect(driver.send("MAIL FROM:<a@b> SIZE=123456789012345678901\r\n") == ["501 5.5.4 Malformed SIZE parameter"])
        #expect(driver.send("MAIL FROM:<jöhn@b>\r\n") == ["553 5.6.7 Non-ASCII addresses are not permitted (no SMTPUTF8)"])
        #expect(driver.send("MAIL FROM:<a@b> SIZE=0000000000000000001\r\n") == ["250 2.1.0 Sender OK"])
        driver.send("RSET\r\n")
        #expect(codes(driver.send("MAIL FROM:<a@b> BODY=9BIT\r\n")) == ["501"])
        #expect(codes(driver.send("MAIL FROM:<a@b> AUTH=<>\r\n")) == ["555"])
        // Found by the fuzzer: a bare "=" as a parameter trapped on an empty split.
        #expect(codes(driver.send("MAIL FROM:<> =\r\n")) == ["555"])
        #expect(codes(driver.send("MAIL FROM:<>==== SIZE=\r\n")) == ["555"])
        #expect(driver.send("MAIL FROM:<a@b> SIZE=1000 BODY=8BITMIME\r\n") == ["250 2.1.0 Sender OK"])
    }

    @Test func atMostTheRecipientLimitPerMessage() {
        var driver = EngineDriver()
        driver.send("EHLO c\r\nMAIL FROM:<a@b>\r\n")
        var text = ""
        for index in 0..<101 { text += "RCPT TO:<user\(index)@localhost>\r\n" }
        let replies = driver.send(text)
        #expect(replies.filter { $0.hasPrefix("250") }.count == 100)
        #expect(replies.last == "452 4.5.3 Too many recipients")
    }

    @Test func dataIsDotUnstuffedAndEndsOnlyAtTheTerminatorWhateverTheReadBoundaries() {
        for pieces in [1, 3, 7, 64] {
            var driver = EngineDriver()
            driver.transaction()
            let replies = driver.send("DATA\r\nSubject: x\r\n\r\n..leading dot\r\n..\r\n.. \r\nend.\r\n.\r\nNOOP\r\n", pieces: pieces)
            #expect(codes(replies) == ["354", "250", "250"], "pieces \(pieces)")
            #expect(driver.messages.count == 1)
            #expect(String(decoding: driver.messages[0].1, as: UTF8.self) == "Subject: x\r\n\r\n.leading dot\r\n.\r\n. \r\nend.\r\n")
        }
    }

    @Test func commandLinesOverTheLimitAreRefusedAndTheSessionStaysInSync() {
        var driver = EngineDriver()
        let long = "NOOP " + String(repeating: "x", count: 600) + "\r\n"
        #expect(driver.send(long + "NOOP\r\n", pieces: 5) == ["500 5.5.2 Line too long (limit 512 octets)", "250 2.0.0 OK"])
    }

    @Test func tooManyBadCommandsCloseTheSession() {
        var driver = EngineDriver(maxBad: 3)
        let replies = driver.send("A\r\nB\r\nC\r\nNOOP\r\n")
        #expect(codes(replies) == ["500", "500", "500", "421"])
        #expect(driver.closed)
    }

    @Test func oversizedDataIsRefusedWith552AndNothingIsDelivered() {
        var driver = EngineDriver(maxSize: 100)
        driver.transaction()
        let replies = driver.send("DATA\r\n" + String(repeating: "0123456789\r\n", count: 20) + ".\r\nNOOP\r\n")
        #expect(replies == ["354 End data with <CR><LF>.<CR><LF>", "552 5.3.4 Message size exceeds fixed maximum message size (100 octets)", "250 2.0.0 OK"])
        #expect(driver.messages.isEmpty)
        #expect(driver.discarded == 1)
    }
}

@Suite struct SMTPChunkingTests {
    @Test func chunksAreReadByCountAndAreBinarySafe() {
        var driver = EngineDriver()
        driver.transaction()
        let chunk: [UInt8] = Array("a\r\n.\r\nb".utf8) + [0, 255, 13]
        let replies = driver.send(Array("BDAT \(chunk.count)\r\n".utf8) + chunk + Array("BDAT 3 LAST\r\nxyzNOOP\r\n".utf8), pieces: 4)
        #expect(replies == ["250 2.0.0 10 octets received", "250 2.0.0 Message accepted for delivery as ID", "250 2.0.0 OK"])
        #expect(driver.messages.count == 1)
        #expect(driver.messages[0].1 == chunk + Array("xyz".utf8))
    }

    @Test func bdatZeroLastIsValid() {
        var driver = EngineDriver()
        driver.transaction()
        #expect(codes(driver.send("BDAT 2\r\nhiBDAT 0 LAST\r\n")) == ["250", "250"])
        #expect(driver.messages.map { $0.1 } == [Array("hi".utf8)])
    }

    @Test(arguments: [
        ("BDAT\r\n", "", true), ("BDAT x\r\n", "", true), ("BDAT -4\r\n", "", true), ("BDAT +4\r\n", "", true),
        ("BDAT 4 FIRST\r\n", "abcd", false), ("BDAT 4 LAST extra\r\n", "abcd", false),
    ])
    func malformedBdatGets501AndParsedOctetsAreDiscarded(line: String, octets: String, noSize: Bool) {
        var driver = EngineDriver()
        driver.transaction()
        let replies = driver.send(line + octets + "NOOP\r\n")
        #expect(replies == ["501 5.5.4 Syntax: BDAT chunk-size [LAST]", "250 2.0.0 OK"], "\(line)")
        #expect(driver.messages.isEmpty)
    }

    /// RFC 3030 §2: chunk-size is 1*DIGIT. Leading zeros are read as such (the chunk's octets are data,
    /// never commands); a size of more than 18 significant digits ends the session with 552, since its
    /// octets could never all be read and anything after the line would be read as commands.
    @Test func bdatSizesAreReadAsDigitsWhateverTheirWidth() {
        var driver = EngineDriver()
        driver.transaction()
        #expect(driver.send("BDAT 0000000000000000034 LAST\r\nNOOP smuggled-1\r\nNOOP smuggled-2\r\n") == ["250 2.0.0 Message accepted for delivery as ID"])
        #expect(driver.messages.map { $0.1 } == [Array("NOOP smuggled-1\r\nNOOP smuggled-2\r\n".utf8)])
        driver.transaction()
        driver.send("BDAT 2\r\nab")
        #expect(driver.send("BDAT 99999999999999999999\r\nNOOP\r\n") == ["552 5.3.4 Message size exceeds fixed maximum message size (1000 octets); closing connection"])
        #expect(driver.closed)
        #expect(driver.discarded == 1)
        #expect(driver.messages.count == 1)
    }

    /// The engine stops where content ends, so that the handler feeds the commands behind it a slice at a
    /// time (and stops while the client does not read the replies), as it does every command.
    @Test func receiveStopsWhereAChunkEndsWithCommandsBehindIt() {
        var driver = EngineDriver()
        driver.transaction()
        var buffer = ByteBuffer(string: "BDAT 1\r\nx" + String(repeating: "NOOP\r\n", count: 100))
        var replies: [String] = []
        for action in driver.session.receive(&buffer) { if case .reply(let text) = action { replies.append(text) } }
        #expect(replies == ["250 2.0.0 1 octets received"])
        #expect(buffer.readableBytes == 600, "the NOOPs wait for the next call")
        var refused = ByteBuffer(string: "BDAT 2000 LAST\r\n" + String(repeating: "y", count: 2000) + "NOOP\r\n")
        replies = []
        for action in driver.session.receive(&refused) { if case .reply(let text) = action { replies.append(text) } }
        #expect(replies == ["552 5.3.4 Message size exceeds fixed maximum message size (1000 octets)"])
        #expect(refused.readableBytes == 6)
    }

    @Test func bdatWithoutMailOrRcptGets503AndItsOctetsAreDiscarded() {
        var driver = EngineDriver()
        driver.send("EHLO c\r\n")
        #expect(driver.send("BDAT 4\r\nabcdNOOP\r\n") == ["503 5.5.1 Need MAIL command", "250 2.0.0 OK"])
        driver.send("MAIL FROM:<a@b>\r\n")
        #expect(driver.send("BDAT 4 LAST\r\nabcdNOOP\r\n") == ["503 5.5.1 Need RCPT command", "250 2.0.0 OK"])
    }

    @Test func onlyBdatRsetNoopAndQuitInsideAChunkedTransaction() {
        var driver = EngineDriver()
        driver.transaction()
        driver.send("BDAT 4\r\nb00m")
        for command in ["DATA", "MAIL FROM:<x@y>", "RCPT TO:<c@localhost>", "EHLO again", "HELO again", "AUTH LOGIN", "VRFY x"] {
            #expect(driver.send(command + "\r\n") == ["503 5.5.1 BDAT expected"], "\(command)")
        }
        #expect(driver.send("NOOP\r\n") == ["250 2.0.0 OK"])
        // The transaction is as it was: the next chunk completes it.
        #expect(codes(driver.send("BDAT 2 LAST\r\n!!")) == ["250"])
        #expect(driver.messages.map { $0.1 } == [Array("b00m!!".utf8)])
        #expect(driver.failure == nil)
    }

    @Test func theMS02012ProbeGets503WithoutTheReplayAndFailsWithIt() {
        let probe = "HELO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<bob@localhost>\r\nBDAT 4\r\nb00mAUTH LOGIN\r\n"
        var patched = EngineDriver()
        #expect(patched.send(probe).last == "503 5.5.1 BDAT expected")
        #expect(patched.failure == nil)

        var vulnerable = EngineDriver(simulate: true)
        vulnerable.send(probe)
        #expect(vulnerable.failure == "ms02-012: AUTH inside BDAT transaction")
        #expect(vulnerable.session.isClosed)
    }

    @Test func binaryMIMEWorksWithBdatAndIsRefusedWithData() {
        var driver = EngineDriver()
        driver.send("EHLO c\r\nMAIL FROM:<a@b> BODY=BINARYMIME\r\nRCPT TO:<bob@localhost>\r\n")
        #expect(driver.send("DATA\r\n") == ["503 5.5.1 BODY=BINARYMIME requires BDAT"])
        #expect(codes(driver.send("BDAT 3 LAST\r\n\u{0}\u{1}\u{2}")) == ["250"])
    }

    /// A chunk past the limit fails the transaction: later chunks get 552 too (their octets discarded),
    /// until RSET or the LAST chunk, whose 552 ends the transaction as the end of DATA does.
    @Test func aChunkPastTheSizeLimitGets552AndTheTransactionFailsUntilItsLastChunk() {
        var driver = EngineDriver(maxSize: 10)
        driver.transaction()
        let replies = driver.send("BDAT 6\r\n123456BDAT 6\r\n7890abNOOP\r\nMAIL FROM:<c@d>\r\nBDAT 2\r\nyyBDAT 2 LAST\r\nzzMAIL FROM:<c@d>\r\nRSET\r\nNOOP\r\n")
        #expect(codes(replies) == ["250", "552", "250", "503", "552", "552", "250", "250", "250"])
        #expect(driver.messages.isEmpty)
        #expect(driver.discarded == 1)
        // A LAST chunk that is over the limit by itself: 552, and the next MAIL needs no RSET.
        driver.transaction()
        #expect(codes(driver.send("BDAT 11 LAST\r\n12345678901MAIL FROM:<e@f>\r\nRCPT TO:<bob@localhost>\r\nBDAT 3 LAST\r\nabc")) == ["552", "250", "250", "250"])
        #expect(driver.messages.map { $0.1 } == [Array("abc".utf8)])
    }

    /// RFC 5321 §4.5.1: postmaster is one mailbox whatever the case it is written in.
    @Test func postmasterInAnyCaseIsThePostmaster() {
        var driver = EngineDriver()
        driver.send("EHLO c\r\nMAIL FROM:<a@b>\r\n")
        #expect(codes(driver.send("RCPT TO:<PoStMaStEr@localhost>\r\nRCPT TO:<POSTMASTER>\r\nDATA\r\nhi\r\n.\r\n")) == ["250", "250", "354", "250"])
        #expect(driver.messages.first?.0.recipients == ["postmaster@localhost", "postmaster@localhost"])
    }

    @Test func rsetBetweenChunksDiscardsWhatWasReceived() {
        var driver = EngineDriver()
        driver.transaction()
        #expect(codes(driver.send("BDAT 3\r\nabcRSET\r\nBDAT 1 LAST\r\nx")) == ["250", "250", "503"])
        #expect(driver.discarded == 1)
        #expect(driver.messages.isEmpty)
    }

    @Test func aWholePipelinedTransactionInOneWriteIsAnsweredInOrder() {
        var driver = EngineDriver()
        let replies = driver.send("EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@localhost>\r\nRCPT TO:<y@example.org>\r\nBDAT 5 LAST\r\nhelloMAIL FROM:<a@b>\r\nRCPT TO:<x@localhost>\r\nDATA\r\nbody\r\n.\r\nQUIT\r\n")
        // EHLO answers with 8 lines; then MAIL, 2 × RCPT, BDAT LAST, MAIL, RCPT, DATA, the message, QUIT.
        #expect(codes(replies) == Array(repeating: "250", count: 14) + ["354", "250", "221"])
        #expect(driver.messages.map { $0.0.recipients } == [["x@localhost", "y@example.org"], ["x@localhost"]])
    }
}
