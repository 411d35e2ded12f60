import Foundation
import Glibc

/// Stores messages durably in Maildirs (`<root>/<domain>/<local-part>/{tmp,new,cur}`).
///
/// The message is written once to `tmp/`, fsynced, then hard-linked into each recipient's `new/`,
/// whose directory is fsynced; only then is the delivery reported done (and the client given 250).
/// On any error the links already made are removed, so `new/` never holds a message the client was
/// told was not accepted.
public struct MaildirWriter: Sendable {
    public let root: String
    public let hostName: String

    public init(root: String, hostName: String) {
        self.root = root
        self.hostName = hostName.replacingOccurrences(of: "/", with: "\\057").replacingOccurrences(of: ":", with: "\\072")
    }

    /// Local parts that are safe as one directory name.
    public static func isSafeLocalPart(_ localPart: String) -> Bool {
        !localPart.isEmpty && localPart.utf8.count <= 64 && !localPart.hasPrefix(".")
            && localPart.unicodeScalars.allSatisfy { scalar in
                scalar.isASCII && scalar.value > 0x20 && scalar != "/" && scalar != "\\" && scalar.value != 0x7F
            }
    }

    /// Delivers `message` to every recipient (`local@domain`). Returns the file names used in `new/`.
    @discardableResult
    public func deliver(message: [UInt8], recipients: [String], uniqueID: String) throws -> [String] {
        let mailboxes = Array(Set(recipients.map(mailbox(for:)))).sorted()
        guard let first = mailboxes.first else { return [] }
        for mailbox in mailboxes { try prepare(mailbox) }
        let name = "\(Int(Date().timeIntervalSince1970)).\(uniqueID).\(hostName)"
        let temporary = "\(first)/tmp/\(name)"
        try write(message, to: temporary)
        defer { unlink(temporary) }
        var linked: [String] = []
        do {
            for mailbox in mailboxes {
                let target = "\(mailbox)/new/\(name)"
                guard link(temporary, target) == 0 else { throw MaildirError(path: target, operation: "link", errno: errno) }
                linked.append(target)
                try syncDirectory("\(mailbox)/new")
            }
        } catch {
            for path in linked { unlink(path) }
            throw error
        }
        return linked
    }

    /// Removes files left in `tmp/` by a delivery that was interrupted (crash, kill); run at start.
    public func cleanTemporaryFiles() -> Int {
        var removed = 0
        let manager = FileManager.default
        for domain in (try? manager.contentsOfDirectory(atPath: root)) ?? [] {
            for user in (try? manager.contentsOfDirectory(atPath: "\(root)/\(domain)")) ?? [] {
                let tmp = "\(root)/\(domain)/\(user)/tmp"
                for file in (try? manager.contentsOfDirectory(atPath: tmp)) ?? [] where unlink("\(tmp)/\(file)") == 0 {
                    removed += 1
                }
            }
        }
        return removed
    }

    func mailbox(for recipient: String) -> String {
        let at = recipient.lastIndex(of: "@")!
        return "\(root)/\(recipient[recipient.index(after: at)...].lowercased())/\(recipient[..<at])"
    }

    private func prepare(_ mailbox: String) throws {
        for sub in ["tmp", "new", "cur"] {
            let path = "\(mailbox)/\(sub)"
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw MaildirError(path: path, operation: "mkdir", errno: (error as NSError).code == 0 ? EIO : Int32((error as NSError).code))
            }
        }
    }

    private func write(_ bytes: [UInt8], to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw MaildirError(path: path, operation: "open", errno: errno) }
        var failure: MaildirError?
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    failure = MaildirError(path: path, operation: "write", errno: errno)
                    return
                }
                offset += written
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = MaildirError(path: path, operation: "fsync", errno: errno) }
        if close(fd) != 0, failure == nil { failure = MaildirError(path: path, operation: "close", errno: errno) }
        if let failure {
            unlink(path)
            throw failure
        }
    }

    private func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw MaildirError(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw MaildirError(path: path, operation: "fsync", errno: errno) }
    }
}

public struct MaildirError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var operation: String
    public var errno: Int32

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}
