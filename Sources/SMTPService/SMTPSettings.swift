import Foundation

/// The SMTP service's own configuration keys (`smtp.*`), documented in docs/configuration.md.
public struct SMTPSettings: Sendable {
    public static let defaultOptions: [String: String] = [
        "domains": "",
        "max-message-size": String(25 * 1024 * 1024),
        "max-recipients": "100",
        "max-sessions": "500",
        "max-bad-commands": "10",
        "idle-timeout": "300",
        "simulate-ms02-012": "false",
        "delivery": "maildir",
    ]

    public enum Delivery: String, Sendable {
        /// Durable Maildir delivery (the default).
        case maildir
        /// Accept and throw away, without touching the disk: for benchmarks against smtp-sink only.
        case discard
    }

    /// Domains mail is accepted for; any other recipient domain is relaying and refused.
    public var domains: Set<String>
    public var maxMessageSize: Int
    public var maxRecipients: Int
    public var maxSessions: Int
    public var maxBadCommands: Int
    public var idleTimeoutSeconds: Int
    /// Maildirs live under `<mailRoot>/<domain>/<local-part>/`.
    public var mailRoot: String
    public var hostName: String
    public var simulateMS02012: Bool
    public var delivery: Delivery

    public init(options: [String: String], stateDirectory: String, hostName: String) throws {
        func option(_ key: String) -> String { options[key] ?? Self.defaultOptions[key]! }
        func positive(_ key: String) throws -> Int {
            guard let value = Int(option(key)), value > 0 else {
                throw SMTPConfigurationError("smtp.\(key): '\(option(key))' is not a positive integer")
            }
            return value
        }
        let listed = option("domains").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        domains = listed.isEmpty ? ["localhost", hostName.lowercased()] : Set(listed)
        maxMessageSize = try positive("max-message-size")
        maxRecipients = try positive("max-recipients")
        maxSessions = try positive("max-sessions")
        maxBadCommands = try positive("max-bad-commands")
        idleTimeoutSeconds = try positive("idle-timeout")
        mailRoot = stateDirectory + "/mail"
        self.hostName = hostName
        switch option("simulate-ms02-012").lowercased() {
        case "true", "yes", "on", "1": simulateMS02012 = true
        case "false", "no", "off", "0": simulateMS02012 = false
        case let other: throw SMTPConfigurationError("smtp.simulate-ms02-012: '\(other)' is not a boolean")
        }
        guard let delivery = Delivery(rawValue: option("delivery")) else {
            throw SMTPConfigurationError("smtp.delivery: '\(option("delivery"))' is not maildir or discard")
        }
        self.delivery = delivery
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

public struct SMTPConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
