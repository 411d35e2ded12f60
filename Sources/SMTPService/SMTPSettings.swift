import Foundation
import Supervision

/// The SMTP service's own configuration keys (`smtp.*`), documented in docs/configuration.md.
public struct SMTPSettings: Sendable {
    public static let defaultOptions: [String: String] = [
        "domains": "",
        "max-message-size": String(25 * 1024 * 1024),
        "max-recipients": "100",
        "max-sessions": "500",
        "max-sessions-per-client": "20",
        "max-bad-commands": "10",
        "idle-timeout": "300",
        "send-timeout": "60",
        "recipients": "any",
        "simulate-ms02-012": "false",
        "delivery": "maildir",
        "commit": "journal",
        "journal-size": String(64 * 1024 * 1024),
    ]

    /// The documented range of every numeric key (docs/configuration.md).
    public static let ranges: [String: ClosedRange<Int>] = [
        "max-message-size": 1...2_147_483_647,
        "max-recipients": 1...10_000,
        "max-sessions": 1...1_000_000,
        "max-sessions-per-client": 1...1_000_000,
        "max-bad-commands": 1...1_000,
        "idle-timeout": 1...86_400,
        "send-timeout": 1...86_400,
        "journal-size": (1024 * 1024)...(64 * 1024 * 1024 * 1024),
    ]

    public enum Delivery: String, Sendable {
        /// Durable Maildir delivery (the default).
        case maildir
        /// Accept and throw away, without touching the disk: for benchmarks against smtp-sink only.
        case discard
    }

    /// What a 250 after the message's data waits for (docs/smtp.md, "What 250 means").
    public enum Commit: String, Sendable {
        /// The message's record in the write-ahead journal, flushed (one flush shared by every commit
        /// waiting on it); its delivery into `new/` follows at once.
        case journal
        /// The message in every recipient's `new/`: the file and `new/` fsynced.
        case direct
    }

    /// Which local parts of an accepted domain RCPT accepts.
    public enum Recipients: String, Sendable {
        /// Any safe local part; its Maildir is created when its first message commits.
        case any
        /// Only those whose Maildir exists (`550 5.1.1` otherwise), and `postmaster`.
        case existing
    }

    /// Domains mail is accepted for; any other recipient domain is relaying and refused.
    public var domains: Set<String>
    public var maxMessageSize: Int
    public var maxRecipients: Int
    public var maxSessions: Int
    public var maxSessionsPerClient: Int
    public var maxBadCommands: Int
    public var idleTimeoutSeconds: Int
    /// Replies that make no progress this long close the session (``ServerInstance``'s connection head handler).
    public var sendTimeoutSeconds: Int
    public var recipients: Recipients
    /// Maildirs live under `<mailRoot>/<domain>/<local-part>/`.
    public var mailRoot: String
    public var hostName: String
    public var simulateMS02012: Bool
    public var delivery: Delivery
    public var commit: Commit
    /// The journal file's size in bytes; messages larger than a quarter of it are committed directly.
    public var journalSize: Int

    /// Reads and checks the `smtp.*` keys; throws ``SettingError`` naming the key.
    public init(options values: [String: String], stateDirectory: String, hostName: String) throws(SettingError) {
        let options = ServiceOptions(section: "smtp", values: values, defaults: Self.defaultOptions)
        func number(_ key: String) throws(SettingError) -> Int { try options.integer(key, in: Self.ranges[key]!) }
        let listed = options.text("domains").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        for domain in listed where !Self.isDomainName(domain) {
            throw options.error("domains", "'\(domain)' is not a domain name")
        }
        domains = listed.isEmpty ? ["localhost", hostName.lowercased()] : Set(listed)
        maxMessageSize = try number("max-message-size")
        maxRecipients = try number("max-recipients")
        maxSessions = try number("max-sessions")
        maxSessionsPerClient = try number("max-sessions-per-client")
        maxBadCommands = try number("max-bad-commands")
        idleTimeoutSeconds = try number("idle-timeout")
        sendTimeoutSeconds = try number("send-timeout")
        guard let recipients = Recipients(rawValue: options.text("recipients")) else {
            throw options.error("recipients", "'\(options.text("recipients"))' is not any or existing")
        }
        self.recipients = recipients
        mailRoot = stateDirectory + "/mail"
        self.hostName = hostName
        simulateMS02012 = try options.bool("simulate-ms02-012")
        guard let delivery = Delivery(rawValue: options.text("delivery")) else {
            throw options.error("delivery", "'\(options.text("delivery"))' is not maildir or discard")
        }
        self.delivery = delivery
        guard let commit = Commit(rawValue: options.text("commit")) else {
            throw options.error("commit", "'\(options.text("commit"))' is not journal or direct")
        }
        self.commit = commit
        // Whole pages: the ring's records are aligned to 8 bytes, its head is one page.
        journalSize = try number("journal-size") / 4096 * 4096
    }

    /// A domain that is safe as a directory name under the mail root: letters, digits, `-` and `.` (RFC 1035
    /// §2.3.1), not starting with a dot. Address literals (`[127.0.0.1]`) are not accepted domains.
    static func isDomainName(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 253 && !text.hasPrefix(".") && !text.contains("..")
            && text.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".")
            }
    }

    var sessionOptions: SMTPSession.Options {
        var options = SMTPSession.Options(hostName: hostName, domains: domains)
        options.limits.maxMessageSize = maxMessageSize
        options.limits.maxRecipients = maxRecipients
        options.limits.maxBadCommands = maxBadCommands
        options.simulateMS02012 = simulateMS02012
        return options
    }
}

