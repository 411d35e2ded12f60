import Foundation

/// A message found in a Maildir.
public struct DeliveredMessage: Sendable, Equatable {
    public var path: String
    public var content: Data

    /// The content after the headers the host prepends (`Return-Path:` and `Received:`): what the client sent.
    public var body: Data { Self.body(of: content) }

    /// What the client sent of a stored message's `content`: without the host's `Return-Path:` line and
    /// `Received:` header (for files read some other way than ``TestHost/deliveredMessages(to:folder:)``).
    public static func body(of content: Data) -> Data {
        let bytes = [UInt8](content)
        var index = 0
        // Skip the Return-Path line and the Received header (its continuation lines start with a tab).
        for prefix in ["Return-Path:", "Received:"] where bytes[index...].starts(with: Array(prefix.utf8)) {
            repeat {
                guard let newline = bytes[index...].firstIndex(of: 0x0A) else { return Data() }
                index = newline + 1
            } while index < bytes.count && bytes[index] == 0x09
        }
        return Data(bytes[index...])
    }
}

extension TestHost {
    /// The Maildir of `local@domain` under the host's state directory.
    public func maildir(for address: String) -> URL {
        let parts = address.split(separator: "@")
        return stateDirectory.appendingPathComponent("mail/\(parts[1].lowercased())/\(parts[0])")
    }

    /// The messages in `new/` (or another folder: `tmp`, `cur`) of `address`'s Maildir, oldest name first,
    /// once the host has delivered what it acknowledged (``awaitDeliveries(timeout:)``).
    public func deliveredMessages(to address: String, folder: String = "new") -> [DeliveredMessage] {
        awaitDeliveries()
        let directory = maildir(for: address).appendingPathComponent(folder)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).sorted()
        return names.compactMap { name in
            let path = directory.appendingPathComponent(name).path
            return (try? Data(contentsOf: URL(fileURLWithPath: path))).map { DeliveredMessage(path: path, content: $0) }
        }
    }

    /// Every Maildir under the state directory, as `local@domain`.
    public func mailboxes() -> [String] {
        let root = stateDirectory.appendingPathComponent("mail").path
        let manager = FileManager.default
        // `.spool` holds messages being received, not a domain.
        return ((try? manager.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }.flatMap { domain in
            ((try? manager.contentsOfDirectory(atPath: "\(root)/\(domain)")) ?? []).map { "\($0)@\(domain)" }
        }.sorted()
    }

    /// Files in the spool folder (`mail/.spool/`): messages being received, or left by a host that died
    /// before they were committed.
    /// With `smtp.commit = journal` (the default) a message is linked into `new/` just after its 250, and
    /// its spool file removed then: waits until the spool is empty (every acknowledged message delivered,
    /// no message being received), at most `timeout`. Returns whether it emptied.
    @discardableResult
    public func awaitDeliveries(timeout: Duration = .seconds(2)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !spooledFiles().isEmpty {
            guard ContinuousClock.now < deadline else { return false }
            usleep(5_000)
        }
        return true
    }

    public func spooledFiles() -> [String] {
        let spool = stateDirectory.appendingPathComponent("mail/.spool").path
        return ((try? FileManager.default.contentsOfDirectory(atPath: spool)) ?? []).sorted()
    }
}
