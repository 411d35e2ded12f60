import NIOCore

/// Who a message is from and for.
public struct Envelope: Sendable, Equatable {
    public var sender: String
    public var recipients: [String]
    public var heloName: String
}

/// The ESMTP protocol engine of one session: a pure state machine. Bytes go in; replies and spool
/// actions come out. It has no sockets, files or clocks, so it can be unit-tested and fuzzed.
///
/// RFC 5321 with PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152), CHUNKING and BINARYMIME
/// (RFC 3030) and enhanced status codes (RFC 2034, RFC 3463). Memory is bounded whatever the input: a
/// command line is at most ``Limits/maxCommandLine`` octets, message content is handed out as it arrives
/// (``Action/messageData(_:)``) and never accumulated here.
///
/// Only CRLF ends a line (RFC 5321 §2.3.8). A bare LF in a command line or in DATA content is answered
/// `521 5.5.2` and the session closed with nothing of its transaction delivered, as Postfix's
/// `smtpd_forbid_bare_newline = normal` does: otherwise `\n.\n` would end DATA for us while another
/// server reads on, and the bytes after it would run as commands ("SMTP smuggling", CVE-2023-51764's
/// class). BDAT chunks are counted octets and stay binary-safe.
public struct SMTPSession: Sendable {
    public enum Action: Sendable, Equatable {
        case reply(String)
        /// Open a spool for a message to `envelope`; ``messageData(_:)`` follows.
        case startMessage(Envelope)
        /// Octets of the message content, in order (dot-unstuffed for DATA).
        case messageData(ByteBuffer)
        /// The message is complete: store it durably, then call ``SMTPSession/deliveryFinished(_:)``.
        /// The engine consumes no input until then.
        case commitMessage
        /// Throw the spooled content away.
        case discardMessage
        /// Close the connection after the replies before it were sent.
        case close
        /// The MS02-012 replay: the instance must fail as the 2002 service did.
        case simulatedFailure(reason: String)
    }

    public struct Limits: Sendable, Equatable {
        /// RFC 5321 §4.5.3.1.4: 512 octets including CRLF.
        public var maxCommandLine = 512
        public var maxRecipients = 100
        public var maxMessageSize = 25 * 1024 * 1024
        public var maxBadCommands = 10

        public init() {}
    }

    public struct Options: Sendable {
        public var hostName: String
        public var domains: Set<String>
        public var limits = Limits()
        /// Fail like the 2002 service on a non-BDAT command inside a chunked transaction.
        public var simulateMS02012 = false
        /// `smtp.recipients = existing`: whether `local@domain` has a mailbox (nil: any local part is
        /// accepted). Postmaster is always accepted (RFC 5321 §4.5.1).
        public var mailboxExists: (@Sendable (_ address: String) -> Bool)?

        /// Where `RCPT TO:<Postmaster>` (no domain) is delivered: the host's own name if it is an accepted
        /// domain, else `localhost`, else the first accepted domain.
        var postmasterDomain: String {
            let host = hostName.lowercased()
            if domains.contains(host) { return host }
            if domains.contains("localhost") { return "localhost" }
            return domains.sorted().first ?? "localhost"
        }

        public init(hostName: String, domains: Set<String>) {
            self.hostName = hostName
            self.domains = domains
        }
    }

    enum BodyType: Equatable { case sevenBit, eightBitMIME, binaryMIME }

    /// Where the next input octets go.
    enum Input: Equatable {
        case command
        /// DATA content, streamed; the position tells whether a dot here could be stuffing or the end.
        case data(DataPosition)
        /// A BDAT chunk: `remaining` octets, kept (`keep`) or discarded, then the chunk's reply.
        case chunk(remaining: Int, keep: Bool, last: Bool, reply: String?)
        /// A message was handed over for storage; nothing is consumed until it is done.
        case awaitingDelivery
        case closed
    }

    struct Transaction: Equatable {
        var sender: String
        var recipients: [String] = []
        var body: BodyType = .sevenBit
        /// A BDAT chunk was accepted and the message is open (no LAST yet).
        var chunking = false
        /// Octets of content so far.
        var size = 0
        /// A chunk exceeded the size limit: the rest of the transaction is discarded until RSET.
        var failed = false
    }

    public let options: Options
    var input: Input = .command
    var heloName: String?
    var transaction: Transaction?
    var line: [UInt8] = []
    /// The current command line is over the limit; its remainder is being skipped.
    var skippingLongLine = false
    var badCommands = 0
    /// The DATA content is over the size limit: the rest is discarded, and `.` gets 552.
    var dataTooLarge = false
    /// The last DATA octet handed on was a CR: an LF at the start of the next read ends a proper line.
    var dataAfterCR = false

    public init(options: Options) {
        self.options = options
    }

    public var greeting: String { "220 \(options.hostName) ESMTP inetinfo" }

    /// Whether the session waits for a delivery to finish (the caller should stop reading).
    public var isAwaitingDelivery: Bool { input == .awaitingDelivery }
    public var isClosed: Bool { input == .closed }
    /// Whether the next octets are message content (DATA or a BDAT chunk), which produce no replies.
    public var isReceivingContent: Bool {
        switch input {
        case .data, .chunk: return true
        case .command, .awaitingDelivery, .closed: return false
        }
    }

    // MARK: - Input

    /// Consumes as much of `buffer` as it can and returns what to do; it stops early where message content
    /// ends (a chunk, or DATA refused as too large) with commands behind it, so that the caller feeds
    /// those commands a slice at a time, as it does all commands: content is passed whole, and a chunk
    /// followed by 64 KiB of pipelined commands would otherwise answer them all at once, whether the
    /// client reads the replies or not. Input left in `buffer` must be passed again (after
    /// ``deliveryFinished(_:)`` when awaiting a delivery).
    public mutating func receive(_ buffer: inout ByteBuffer) -> [Action] {
        var actions: [Action] = []
        while buffer.readableBytes > 0 {
            let wasContent = isReceivingContent
            switch input {
            case .closed, .awaitingDelivery:
                return actions
            case .command:
                consumeCommandBytes(&buffer, into: &actions)
            case .data(let position):
                consumeData(&buffer, at: position, into: &actions)
            case .chunk(let remaining, let keep, let last, let reply):
                let count = min(remaining, buffer.readableBytes)
                let octets = buffer.readSlice(length: count)!
                if keep, count > 0 { actions.append(.messageData(octets)) }
                input = .chunk(remaining: remaining - count, keep: keep, last: last, reply: reply)
                if remaining - count == 0 { finishChunk(keep: keep, last: last, reply: reply, into: &actions) }
            }
            if wasContent, input == .command { return actions }
        }
        return actions
    }

    public enum DeliveryOutcome: Sendable, Equatable {
        case delivered(id: String)
        /// The disk is full (ENOSPC, EDQUOT).
        case insufficientStorage
        case failed
    }

    /// The outcome of ``Action/commitMessage``: 250 only once the message is on stable storage.
    public mutating func deliveryFinished(_ outcome: DeliveryOutcome) -> [Action] {
        guard input == .awaitingDelivery else { return [] }
        input = .command
        transaction = nil
        switch outcome {
        case .delivered(let id): return [.reply("250 2.0.0 Message accepted for delivery as \(id)")]
        case .insufficientStorage: return [.reply("452 4.3.1 Insufficient system storage; message not accepted, try again later")]
        case .failed: return [.reply("451 4.3.0 Local storage error; message not accepted, try again later")]
        }
    }

    /// The idle timeout ran out (RFC 5321 §4.5.3.2.7).
    public mutating func timedOut() -> [Action] {
        close(with: "421 4.4.2 \(options.hostName) Idle timeout, closing connection")
    }

    /// The instance is stopping; a session waiting for a delivery finishes it first.
    public mutating func shuttingDown() -> [Action] {
        close(with: "421 4.3.2 \(options.hostName) Service shutting down, closing connection")
    }

    private mutating func close(with reply: String) -> [Action] {
        guard input != .closed else { return [] }
        var actions: [Action] = []
        if transaction != nil, input != .awaitingDelivery, isSpooling { actions.append(.discardMessage) }
        input = .closed
        actions += [.reply(reply), .close]
        return actions
    }

    /// Whether a spool is open (DATA content or accepted chunks so far).
    private var isSpooling: Bool {
        switch input {
        case .data: return true
        case .chunk(_, let keep, _, _): return keep || transaction?.chunking == true
        default: return transaction?.chunking == true && transaction?.failed == false
        }
    }

    // MARK: - Commands

    private mutating func consumeCommandBytes(_ buffer: inout ByteBuffer, into actions: inout [Action]) {
        let view = buffer.readableBytesView
        if let newline = view.firstIndex(of: 0x0A) {
            let length = newline - view.startIndex
            if skippingLongLine {
                buffer.moveReaderIndex(forwardBy: length + 1)
                skippingLongLine = false
                return
            }
            guard line.count + length + 1 <= options.limits.maxCommandLine else {
                buffer.moveReaderIndex(forwardBy: length + 1)
                line.removeAll()
                actions += bad("500 5.5.2 Line too long (limit \(options.limits.maxCommandLine) octets)")
                return
            }
            line += view[view.startIndex..<newline]
            buffer.moveReaderIndex(forwardBy: length + 1)
            guard line.last == 0x0D else {
                line.removeAll()
                actions += bareLineFeed()
                return
            }
            line.removeLast()
            let command = line
            line.removeAll(keepingCapacity: true)
            actions += handle(command: command)
        } else {
            if skippingLongLine {
                buffer.moveReaderIndex(forwardBy: view.count)
            } else if line.count + view.count >= options.limits.maxCommandLine {
                // RFC 5321 §4.5.3.1.4: refuse the line and discard the rest of it.
                buffer.moveReaderIndex(forwardBy: view.count)
                line.removeAll()
                skippingLongLine = true
                actions += bad("500 5.5.2 Line too long (limit \(options.limits.maxCommandLine) octets)")
            } else {
                line += view
                buffer.moveReaderIndex(forwardBy: view.count)
            }
        }
    }

    mutating func handle(command raw: [UInt8]) -> [Action] {
        // The verb is matched as upper-case ASCII without building intermediate strings: command parsing
        // is the engine's hot path under load.
        let space = raw.firstIndex(of: UInt8(ascii: " ")) ?? raw.endIndex
        let verb = String(decoding: raw[..<space].lazy.map(Self.asciiUppercased), as: UTF8.self)
        let argument = String(decoding: Self.trimmed(raw[space...]), as: UTF8.self)

        // RFC 3030 §2 / MS02-012: inside an open chunked transaction only BDAT, RSET, NOOP and QUIT.
        if transaction?.chunking == true, !["BDAT", "RSET", "NOOP", "QUIT"].contains(verb) {
            if options.simulateMS02012 {
                input = .closed
                return [.simulatedFailure(reason: "ms02-012: \(verb.isEmpty ? "empty command" : verb) inside BDAT transaction")]
            }
            return bad("503 5.5.1 BDAT expected")
        }

        switch verb {
        case "HELO", "EHLO":
            guard !argument.isEmpty, !argument.contains(" ") else { return bad("501 5.5.4 Syntax: \(verb) hostname") }
            // The name goes into the stored Received: header: no control octet may reach it.
            guard !Self.hasControlOctet(argument) else { return bad("501 5.5.2 Invalid characters in \(verb) hostname") }
            heloName = argument
            transaction = nil
            if verb == "HELO" { return [.reply("250 \(options.hostName)")] }
            return [.reply([
                "250-\(options.hostName) greets \(argument)", "250-PIPELINING", "250-SIZE \(options.limits.maxMessageSize)",
                "250-8BITMIME", "250-BINARYMIME", "250-CHUNKING", "250-ENHANCEDSTATUSCODES", "250 HELP",
            ].joined(separator: "\r\n"))]
        case "MAIL":
            return mail(argument)
        case "RCPT":
            return rcpt(argument)
        case "DATA":
            guard let transaction else { return bad("503 5.5.1 Need MAIL command") }
            guard !transaction.recipients.isEmpty else { return bad("503 5.5.1 Need RCPT command") }
            guard argument.isEmpty else { return bad("501 5.5.4 Syntax: DATA") }
            // RFC 3030 §3: BINARYMIME content can only be sent with BDAT.
            guard transaction.body != .binaryMIME else { return bad("503 5.5.1 BODY=BINARYMIME requires BDAT") }
            input = .data(.lineStart)
            dataTooLarge = false
            return [.startMessage(envelope(transaction)), .reply("354 End data with <CR><LF>.<CR><LF>")]
        case "BDAT":
            return bdat(argument)
        case "RSET":
            guard argument.isEmpty else { return bad("501 5.5.4 Syntax: RSET") }
            let wasSpooling = transaction?.chunking == true
            transaction = nil
            return (wasSpooling ? [.discardMessage] : []) + [.reply("250 2.0.0 OK")]
        case "NOOP":
            return [.reply("250 2.0.0 OK")]
        case "QUIT":
            let wasSpooling = transaction?.chunking == true
            input = .closed
            return (wasSpooling ? [.discardMessage] : []) + [.reply("221 2.0.0 \(options.hostName) closing connection"), .close]
        case "VRFY":
            guard !argument.isEmpty else { return bad("501 5.5.4 Syntax: VRFY address") }
            return [.reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")]
        case "HELP":
            return [.reply("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP")]
        // RFC 5321 §4.2.4: known commands this server does not offer (optional, obsolete, or extensions it
        // does not advertise) get 502; anything else is not a command (500).
        case "EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB", "AUTH", "STARTTLS":
            return bad("502 5.5.1 Command not implemented")
        default:
            return bad("500 5.5.2 Command not recognized")
        }
    }

    private mutating func mail(_ argument: String) -> [Action] {
        guard heloName != nil else { return bad("503 5.5.1 Send HELO or EHLO first") }
        guard transaction == nil else { return bad("503 5.5.1 Sender already specified") }
        guard let (path, parameters) = Self.path(argument, keyword: "FROM:") else {
            return bad("501 5.5.4 Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME|BINARYMIME]")
        }
        // The sender goes into the stored Return-Path: header.
        guard !Self.hasControlOctet(path) else { return bad("501 5.1.7 Bad sender address syntax") }
        guard path.utf8.allSatisfy({ $0 < 0x80 }) else { return [.reply(Self.nonASCIIAddress)] }
        var body = BodyType.sevenBit
        for parameter in parameters {
            // Keep empty pieces: a parameter of just "=" must not leave nothing to look at (found by the fuzzer).
            let pieces = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            let value = pieces.count == 2 ? pieces[1] : ""
            switch pieces[0].uppercased() {
            case "SIZE":
                // RFC 1870: size-value is 1*20DIGIT; one of over 18 significant digits is over any limit.
                guard (1...20).contains(value.count), value.allSatisfy(\.isASCIIDigit) else {
                    return bad("501 5.5.4 Malformed SIZE parameter")
                }
                let significant = value.drop { $0 == "0" }
                let size = significant.count <= 18 ? Int(significant.isEmpty ? "0" : significant) ?? .max : .max
                if size > options.limits.maxMessageSize {
                    return [.reply("552 5.3.4 Message size exceeds fixed maximum message size (\(options.limits.maxMessageSize) octets)")]
                }
            case "BODY":
                switch value.uppercased() {
                case "7BIT": body = .sevenBit
                case "8BITMIME": body = .eightBitMIME
                case "BINARYMIME": body = .binaryMIME
                default: return bad("501 5.5.4 Unsupported BODY value \(value)")
                }
            default:
                return bad("555 5.5.4 Unsupported MAIL parameter \(pieces[0])")
            }
        }
        transaction = Transaction(sender: path, body: body)
        return [.reply("250 2.1.0 Sender OK")]
    }

    private mutating func rcpt(_ argument: String) -> [Action] {
        guard transaction != nil else { return bad("503 5.5.1 Need MAIL before RCPT") }
        guard let (path, parameters) = Self.path(argument, keyword: "TO:"), !path.isEmpty else {
            return bad("501 5.5.4 Syntax: RCPT TO:<address>")
        }
        guard !Self.hasControlOctet(path) else { return bad("501 5.1.3 Bad recipient address syntax") }
        guard path.utf8.allSatisfy({ $0 < 0x80 }) else { return [.reply(Self.nonASCIIAddress)] }
        guard parameters.isEmpty else { return bad("555 5.5.4 Unsupported RCPT parameter \(parameters[0])") }
        // RFC 5321 §4.5.1: "Postmaster" without a domain must be accepted.
        let address = path.lowercased() == "postmaster" ? "postmaster@\(options.postmasterDomain)" : path
        guard let at = address.lastIndex(of: "@"), at != address.startIndex, address.index(after: at) != address.endIndex else {
            return [.reply("550 5.1.3 Recipient address must be local-part@domain")]
        }
        let domain = address[address.index(after: at)...].lowercased()
        // Never an open relay (MS02-011 was one).
        guard options.domains.contains(domain) else { return [.reply("550 5.7.1 Relaying denied")] }
        // RFC 5321 §4.5.1: "postmaster" in any case is the one postmaster mailbox, never a new one per spelling.
        let localPart = address[..<at].lowercased() == "postmaster" ? "postmaster" : String(address[..<at])
        guard MaildirWriter.isSafeLocalPart(localPart) else { return [.reply("550 5.1.1 Mailbox name not allowed")] }
        let recipient = localPart + "@" + domain
        if let mailboxExists = options.mailboxExists, localPart != "postmaster", !mailboxExists(recipient) {
            return [.reply("550 5.1.1 <\(recipient)>: Recipient address rejected: no such mailbox")]
        }
        guard transaction!.recipients.count < options.limits.maxRecipients else {
            return [.reply("452 4.5.3 Too many recipients")]
        }
        transaction!.recipients.append(recipient)
        return [.reply("250 2.1.5 Recipient OK")]
    }

    /// RFC 3030 §2: `BDAT <chunk-size> [LAST]`; the chunk's octets follow the command line's CRLF.
    private mutating func bdat(_ argument: String) -> [Action] {
        let words = argument.split(separator: " ", omittingEmptySubsequences: true)
        guard let sizeWord = words.first, sizeWord.allSatisfy(\.isASCIIDigit) else {
            // No size could be parsed, so no octets are known to follow: nothing to discard.
            return bad("501 5.5.4 Syntax: BDAT chunk-size [LAST]")
        }
        // RFC 3030 §2: chunk-size is 1*DIGIT, leading zeros and all. A size of more than 18 significant
        // digits is valid, but no session lives to read that many octets, and answering the line and
        // going on would read the chunk's octets as commands: the session ends instead.
        let significant = sizeWord.drop { $0 == "0" }
        guard significant.count <= 18, let size = Int(significant.isEmpty ? "0" : significant) else {
            let wasSpooling = isSpooling
            input = .closed
            transaction = nil
            return (wasSpooling ? [.discardMessage] : [])
                + [.reply("552 5.3.4 Message size exceeds fixed maximum message size (\(options.limits.maxMessageSize) octets); closing connection"), .close]
        }
        let last: Bool
        switch words.count {
        case 1: last = false
        case 2 where words[1].uppercased() == "LAST": last = true
        default:
            // RFC 3030 §2: a rejected BDAT's octets are still read and discarded, to stay in sync.
            return rejectChunk(size: size, reply: "501 5.5.4 Syntax: BDAT chunk-size [LAST]", countsAsBad: true)
        }
        guard let transaction else { return rejectChunk(size: size, reply: "503 5.5.1 Need MAIL command", countsAsBad: true) }
        guard !transaction.recipients.isEmpty else {
            return rejectChunk(size: size, reply: "503 5.5.1 Need RCPT command", countsAsBad: true)
        }
        if transaction.failed || transaction.size + size > options.limits.maxMessageSize {
            let reply = transaction.failed && !last
                ? "552 5.3.4 Message size exceeds fixed maximum message size; send RSET"
                : "552 5.3.4 Message size exceeds fixed maximum message size (\(options.limits.maxMessageSize) octets)"
            var actions: [Action] = transaction.chunking && !transaction.failed ? [.discardMessage] : []
            if last {
                // The LAST chunk's reply ends the transaction, as the end of DATA does: the next MAIL
                // begins a new one, without RSET.
                self.transaction = nil
            } else {
                // Open (failed) until RSET or the LAST chunk, so later chunks are discarded too.
                self.transaction!.failed = true
                self.transaction!.chunking = true
            }
            actions += rejectChunk(size: size, reply: reply, countsAsBad: false)
            return actions
        }
        var actions: [Action] = []
        if !transaction.chunking {
            self.transaction!.chunking = true
            actions.append(.startMessage(envelope(transaction)))
        }
        self.transaction!.size += size
        input = .chunk(remaining: size, keep: true, last: last, reply: nil)
        if size == 0 { finishChunk(keep: true, last: last, reply: nil, into: &actions) }
        return actions
    }

    private mutating func rejectChunk(size: Int, reply: String, countsAsBad: Bool) -> [Action] {
        if countsAsBad {
            badCommands += 1
        }
        input = .chunk(remaining: size, keep: false, last: false, reply: reply)
        var actions: [Action] = []
        if size == 0 { finishChunk(keep: false, last: false, reply: reply, into: &actions) }
        return actions
    }

    private mutating func finishChunk(keep: Bool, last: Bool, reply: String?, into actions: inout [Action]) {
        input = .command
        if let reply {
            actions.append(.reply(reply))
            if badCommands >= options.limits.maxBadCommands { actions += tooManyErrors() }
            return
        }
        if last {
            transaction!.chunking = false
            input = .awaitingDelivery
            actions.append(.commitMessage)
        } else {
            actions.append(.reply("250 2.0.0 \(transaction!.size) octets received"))
        }
    }

    // MARK: - DATA content

    /// Where DATA input stands relative to the `CRLF.CRLF` terminator (RFC 5321 §4.1.1.4, §4.5.2).
    enum DataPosition: Equatable {
        case lineStart
        case midLine
        /// A "." at the start of a line: the end marker or a stuffed dot, decided by the next octet.
        case dot
        /// ".\r" at the start of a line.
        case dotCR
    }

    private mutating func consumeData(_ buffer: inout ByteBuffer, at position: DataPosition, into actions: inout [Action]) {
        switch position {
        case .lineStart:
            dataAfterCR = false
            if buffer.readableBytesView.first == UInt8(ascii: ".") {
                buffer.moveReaderIndex(forwardBy: 1)
                input = .data(.dot)
            } else {
                input = .data(.midLine)
            }
        case .dot:
            guard let next = buffer.readableBytesView.first else { return }
            if next == 0x0A {
                // "\n.\n" or "\r\n.\n": a terminator some servers honour and others not.
                actions += bareLineFeed()
            } else if next == 0x0D {
                buffer.moveReaderIndex(forwardBy: 1)
                input = .data(.dotCR)
            } else {
                // A stuffed dot: the client doubled a leading "."; the first one is dropped.
                input = .data(.midLine)
            }
        case .dotCR:
            if buffer.readableBytesView.first == 0x0A {
                buffer.moveReaderIndex(forwardBy: 1)
                endData(into: &actions)
            } else {
                // ".\r" not followed by LF: the dot was stuffing, the CR is content.
                emit(ByteBuffer(bytes: [0x0D]), into: &actions)
                dataAfterCR = true
                input = .data(.midLine)
            }
        case .midLine:
            // Hand out everything up to a line that starts with "." (the only place the terminator or
            // stuffing can be), so ordinary content goes out in one slice per read.
            let view = buffer.readableBytesView
            var searchFrom = view.startIndex
            while let newline = view[searchFrom...].firstIndex(of: 0x0A) {
                let afterCR = newline == view.startIndex ? dataAfterCR : view[newline - 1] == 0x0D
                guard afterCR else {
                    actions += bareLineFeed()
                    return
                }
                let next = newline + 1
                if next == view.endIndex || view[next] == UInt8(ascii: ".") {
                    emit(buffer.readSlice(length: next - view.startIndex)!, into: &actions)
                    input = .data(.lineStart)
                    return
                }
                searchFrom = next
            }
            dataAfterCR = view.last == 0x0D
            emit(buffer.readSlice(length: view.count)!, into: &actions)
        }
    }

    private mutating func emit(_ octets: ByteBuffer, into actions: inout [Action]) {
        guard !dataTooLarge, let transaction else { return }
        if transaction.size + octets.readableBytes > options.limits.maxMessageSize {
            dataTooLarge = true
            actions.append(.discardMessage)
            return
        }
        self.transaction!.size += octets.readableBytes
        actions.append(.messageData(octets))
    }

    private mutating func endData(into actions: inout [Action]) {
        if dataTooLarge {
            transaction = nil
            input = .command
            actions.append(.reply("552 5.3.4 Message size exceeds fixed maximum message size (\(options.limits.maxMessageSize) octets)"))
            return
        }
        input = .awaitingDelivery
        actions.append(.commitMessage)
    }

    // MARK: - Helpers

    private func envelope(_ transaction: Transaction) -> Envelope {
        Envelope(sender: transaction.sender, recipients: transaction.recipients, heloName: heloName ?? "")
    }

    private mutating func bad(_ reply: String) -> [Action] {
        badCommands += 1
        guard badCommands >= options.limits.maxBadCommands else { return [.reply(reply)] }
        return [.reply(reply)] + tooManyErrors()
    }

    /// RFC 5321 §2.3.8: a bare LF is no line ending. The session ends, and whatever its transaction
    /// received so far is thrown away.
    private mutating func bareLineFeed() -> [Action] {
        let wasSpooling = isSpooling
        input = .closed
        transaction = nil
        return (wasSpooling ? [.discardMessage] : [])
            + [.reply("521 5.5.2 \(options.hostName) Error: bare <LF> received"), .close]
    }

    /// An address with octets above 127: this server does not offer SMTPUTF8 (RFC 6531, which registers 5.6.7).
    static let nonASCIIAddress = "553 5.6.7 Non-ASCII addresses are not permitted (no SMTPUTF8)"

    /// C0 controls and DEL: never part of a host name or an address, and dangerous in a stored header.
    static func hasControlOctet(_ text: String) -> Bool {
        text.utf8.contains { $0 < 0x20 || $0 == 0x7F }
    }

    private mutating func tooManyErrors() -> [Action] {
        let wasSpooling = transaction?.chunking == true
        input = .closed
        return (wasSpooling ? [.discardMessage] : [])
            + [.reply("421 4.7.0 \(options.hostName) Too many errors, closing connection"), .close]
    }

    static func asciiUppercased(_ byte: UInt8) -> UInt8 {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) ? byte - 32 : byte
    }

    /// `bytes` without leading and trailing spaces and tabs.
    static func trimmed(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        let isBlank: (UInt8) -> Bool = { $0 == 0x20 || $0 == 0x09 }
        guard let first = bytes.firstIndex(where: { !isBlank($0) }), let last = bytes.lastIndex(where: { !isBlank($0) }) else {
            return []
        }
        return bytes[first...last]
    }

    /// Parses `FROM:<path> PARAM=VALUE …`; the null path `<>` is allowed (RFC 5321 §4.5.5).
    static func path(_ argument: String, keyword: String) -> (String, [String])? {
        let bytes = Array(argument.utf8)
        let expected = Array(keyword.utf8)
        guard bytes.count >= expected.count, zip(bytes, expected).allSatisfy({ asciiUppercased($0) == $1 }) else { return nil }
        let rest = String(decoding: trimmed(bytes[expected.count...]), as: UTF8.self)
        guard rest.hasPrefix("<"), let close = rest.firstIndex(of: ">") else { return nil }
        var path = String(rest[rest.index(after: rest.startIndex)..<close])
        if path.contains(where: { $0 == " " || $0 == "<" }) { return nil }
        // RFC 5321 §4.1.1.3 and appendix C: a source route `@relay,@relay:user@domain` is accepted and ignored.
        if path.hasPrefix("@") {
            guard let colon = path.firstIndex(of: ":") else { return nil }
            path = String(path[path.index(after: colon)...])
        }
        let parameters = rest[rest.index(after: close)...].split(separator: " ").map(String.init)
        return (path, parameters)
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
