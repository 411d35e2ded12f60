/// An accepted message and who it is for.
public struct Envelope: Sendable, Equatable {
    public var sender: String
    public var recipients: [String]
    public var heloName: String
}

/// The ESMTP protocol engine for one session: a pure state machine. Lines go in, replies and actions
/// come out; it has no sockets, files or clocks, so it can be unit-tested and fuzzed.
///
/// RFC 5321 with enhanced status codes (RFC 2034, RFC 3463).
public struct SMTPSession: Sendable {
    public enum Action: Sendable, Equatable {
        case reply(String)
        /// Store the message; call ``deliveryFinished(success:)`` with the outcome before any reply.
        case deliver(Envelope, [UInt8])
        case close
    }

    public struct Limits: Sendable {
        public var maxLine = 512
        public var maxRecipients = 100
        public var maxMessageSize: Int
        public var maxBadCommands = 10
    }

    enum Phase: Equatable {
        case command
        case data
        case delivering
        case closed
    }

    let hostName: String
    let domains: Set<String>
    let limits: Limits
    var phase: Phase = .command
    var heloName: String?
    var sender: String?
    var recipients: [String] = []
    var body: [UInt8] = []
    var bodyTooLarge = false
    var badCommands = 0

    public init(hostName: String, domains: Set<String>, limits: Limits) {
        self.hostName = hostName
        self.domains = domains
        self.limits = limits
    }

    public var greeting: String { "220 \(hostName) ESMTP inetinfo" }
    public var isInData: Bool { phase == .data }

    /// One line as received, without its CRLF.
    public mutating func receive(line: [UInt8]) -> [Action] {
        switch phase {
        case .data: return receiveData(line: line)
        case .delivering, .closed: return []
        case .command: return receiveCommand(line: line)
        }
    }

    /// A command line longer than the limit (RFC 5321 §4.5.3.1.4); the rest of it was discarded.
    public mutating func lineTooLong() -> [Action] {
        guard phase == .command else { return [] }
        return bad("500 5.5.6 Line too long")
    }

    public mutating func deliveryFinished(success: Bool) -> [Action] {
        guard phase == .delivering else { return [] }
        phase = .command
        resetTransaction()
        return [.reply(success ? "250 2.0.0 Message accepted for delivery"
                               : "451 4.3.0 Local storage error; message not accepted, try again later")]
    }

    /// The idle timeout ran out (RFC 5321 §4.5.3.2.7).
    public mutating func timedOut() -> [Action] {
        phase = .closed
        return [.reply("421 4.4.2 \(hostName) Idle timeout, closing connection"), .close]
    }

    /// The host is stopping this instance gracefully.
    public mutating func shuttingDown() -> [Action] {
        phase = .closed
        return [.reply("421 4.3.2 \(hostName) Service shutting down, closing connection"), .close]
    }

    private mutating func receiveCommand(line raw: [UInt8]) -> [Action] {
        let line = String(decoding: raw, as: UTF8.self)
        let verbEnd = line.firstIndex(of: " ") ?? line.endIndex
        let verb = line[..<verbEnd].uppercased()
        let argument = line[verbEnd...].trimmingCharacters(in: " ")
        switch verb {
        case "HELO", "EHLO":
            guard !argument.isEmpty else { return bad("501 5.5.4 Syntax: \(verb) hostname") }
            heloName = argument
            resetTransaction()
            if verb == "HELO" { return [.reply("250 \(hostName)")] }
            return [.reply([
                "250-\(hostName)", "250-PIPELINING", "250-SIZE \(limits.maxMessageSize)", "250-8BITMIME",
                "250-ENHANCEDSTATUSCODES", "250 HELP",
            ].joined(separator: "\r\n"))]
        case "MAIL":
            guard heloName != nil else { return bad("503 5.5.1 Send HELO or EHLO first") }
            guard sender == nil else { return bad("503 5.5.1 Sender already specified") }
            guard let (path, parameters) = Self.path(argument, keyword: "FROM:") else {
                return bad("501 5.5.4 Syntax: MAIL FROM:<address>")
            }
            for parameter in parameters {
                let pieces = parameter.split(separator: "=", maxSplits: 1).map(String.init)
                switch pieces[0].uppercased() {
                case "SIZE":
                    guard pieces.count == 2, let size = Int(pieces[1]), size >= 0 else {
                        return bad("501 5.5.4 Malformed SIZE parameter")
                    }
                    if size > limits.maxMessageSize { return [.reply("552 5.3.4 Message size exceeds fixed maximum message size")] }
                case "BODY":
                    guard pieces.count == 2, ["7BIT", "8BITMIME"].contains(pieces[1].uppercased()) else {
                        return bad("501 5.5.4 Unsupported BODY parameter")
                    }
                default:
                    return bad("555 5.5.4 Unsupported parameter \(pieces[0])")
                }
            }
            sender = path
            return [.reply("250 2.1.0 Sender OK")]
        case "RCPT":
            guard sender != nil else { return bad("503 5.5.1 Need MAIL before RCPT") }
            guard let (path, parameters) = Self.path(argument, keyword: "TO:"), !path.isEmpty, parameters.isEmpty else {
                return bad("501 5.5.4 Syntax: RCPT TO:<address>")
            }
            guard let at = path.lastIndex(of: "@"), at != path.startIndex else {
                return [.reply("550 5.1.3 Recipient address must be user@domain")]
            }
            let domain = path[path.index(after: at)...].lowercased()
            guard domains.contains(domain) else { return [.reply("550 5.7.1 Relaying denied")] }
            guard recipients.count < limits.maxRecipients else { return [.reply("452 4.5.3 Too many recipients")] }
            guard MaildirWriter.isSafeLocalPart(String(path[..<at])) else {
                return [.reply("550 5.1.1 Mailbox name not allowed")]
            }
            recipients.append(String(path[..<at]) + "@" + domain)
            return [.reply("250 2.1.5 Recipient OK")]
        case "DATA":
            guard sender != nil else { return bad("503 5.5.1 Need MAIL command") }
            guard !recipients.isEmpty else { return bad("503 5.5.1 Need RCPT command") }
            guard argument.isEmpty else { return bad("501 5.5.4 Syntax: DATA") }
            phase = .data
            body = []
            bodyTooLarge = false
            return [.reply("354 End data with <CR><LF>.<CR><LF>")]
        case "RSET":
            resetTransaction()
            return [.reply("250 2.0.0 OK")]
        case "NOOP":
            return [.reply("250 2.0.0 OK")]
        case "QUIT":
            phase = .closed
            return [.reply("221 2.0.0 \(hostName) closing connection"), .close]
        case "VRFY":
            return [.reply("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")]
        case "HELP":
            return [.reply("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP")]
        default:
            return bad("500 5.5.2 Command not recognized")
        }
    }

    private mutating func receiveData(line: [UInt8]) -> [Action] {
        if line == [UInt8(ascii: ".")] {
            guard !bodyTooLarge else {
                phase = .command
                resetTransaction()
                return [.reply("552 5.3.4 Message size exceeds fixed maximum message size")]
            }
            phase = .delivering
            return [.deliver(Envelope(sender: sender ?? "", recipients: recipients, heloName: heloName ?? ""), body)]
        }
        // RFC 5321 §4.5.2: a leading dot was doubled by the client.
        let content = line.first == UInt8(ascii: ".") ? line.dropFirst() : line[...]
        if body.count + content.count + 2 > limits.maxMessageSize {
            bodyTooLarge = true
            body = []
        }
        if !bodyTooLarge {
            body.append(contentsOf: content)
            body.append(contentsOf: [0x0D, 0x0A])
        }
        return []
    }

    private mutating func bad(_ reply: String) -> [Action] {
        badCommands += 1
        if badCommands >= limits.maxBadCommands {
            phase = .closed
            return [.reply(reply), .reply("421 4.7.0 \(hostName) Too many errors, closing connection"), .close]
        }
        return [.reply(reply)]
    }

    private mutating func resetTransaction() {
        sender = nil
        recipients = []
        body = []
        bodyTooLarge = false
    }

    /// Parses `FROM:<path> PARAM=VALUE ...`; the null path `<>` is allowed.
    static func path(_ argument: String, keyword: String) -> (String, [String])? {
        guard argument.uppercased().hasPrefix(keyword) else { return nil }
        let rest = argument.dropFirst(keyword.count).trimmingCharacters(in: " ")
        guard rest.hasPrefix("<"), let close = rest.firstIndex(of: ">") else { return nil }
        let path = String(rest[rest.index(after: rest.startIndex)..<close])
        if path.contains(where: { $0 == " " || $0 == "<" }) { return nil }
        let parameters = rest[rest.index(after: close)...].split(separator: " ").map(String.init)
        return (path, parameters)
    }
}

extension String {
    func trimmingCharacters(in character: Character) -> String {
        String(drop { $0 == character }.reversed().drop { $0 == character }.reversed())
    }
}

extension Substring {
    func trimmingCharacters(in character: Character) -> String {
        String(self).trimmingCharacters(in: character)
    }
}
