import Foundation

/// The SMTP service's own configuration keys (`smtp.*`).
public struct SMTPSettings: Sendable {
    public static let defaultOptions: [String: String] = [
        "domains": "",
        "max-message-size": String(25 * 1024 * 1024),
        "simulate-ms02-012": "false",
    ]

    /// Domains mail is accepted for; any other recipient domain is relaying and refused.
    public var domains: Set<String>
    public var maxMessageSize: Int
    /// Maildirs live under `<mailRoot>/<domain>/<local-part>/`.
    public var mailRoot: String
    public var hostName: String
    public var simulateMS02012: Bool

    public init(options: [String: String], stateDirectory: String, hostName: String) throws {
        let listed = (options["domains"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        domains = listed.isEmpty ? ["localhost", hostName.lowercased()] : Set(listed)
        guard let size = Int(options["max-message-size"] ?? ""), size > 0 else {
            throw SMTPConfigurationError("smtp.max-message-size: '\(options["max-message-size"] ?? "")' is not a positive number of octets")
        }
        maxMessageSize = size
        mailRoot = stateDirectory + "/mail"
        self.hostName = hostName
        switch options["simulate-ms02-012"]?.lowercased() ?? "false" {
        case "true", "yes", "on", "1": simulateMS02012 = true
        case "false", "no", "off", "0": simulateMS02012 = false
        case let other: throw SMTPConfigurationError("smtp.simulate-ms02-012: '\(other)' is not a boolean")
        }
    }
}

public struct SMTPConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
