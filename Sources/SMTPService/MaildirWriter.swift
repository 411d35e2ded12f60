import Foundation
import Glibc
import NIOCore

/// Durable delivery into Maildirs (`<root>/<domain>/<local-part>/{tmp,new,cur}`).
///
/// A message is streamed into `tmp/` of its first recipient's Maildir while it arrives (``MessageSpool``);
/// when it is complete, ``commit(_:)`` fsyncs it, hard-links it into every recipient's `new/`, fsyncs those
/// directories (one fsync serving every concurrent commit to a directory: ``DirectorySyncer``) and removes
/// the `tmp/` name. Only then is the client told 250. If anything fails, the links already made are
/// removed again: `new/` never holds a message whose client was told it was not accepted, and never a
/// partial one.
public struct MaildirWriter: Sendable {
    public let root: String
    /// The host name as Maildir file names carry it (`/` and `:` escaped, as the convention says).
    public let hostName: String
    /// Shares fsyncs of `new/` between concurrent commits.
    private let directories = DirectorySyncer()

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

    /// The Maildir of `local@domain`.
    public func mailbox(for recipient: String) -> String {
        let at = recipient.lastIndex(of: "@")!
        return "\(root)/\(recipient[recipient.index(after: at)...].lowercased())/\(recipient[..<at])"
    }

    /// Opens a spool for a message to `recipients`, named `uniqueName` (the Maildir file name).
    public func openSpool(recipients: [String], uniqueName: String) throws -> MessageSpool {
        let mailboxes = Array(Set(recipients.map(mailbox(for:)))).sorted()
        for mailbox in mailboxes { try prepare(mailbox) }
        return try MessageSpool(path: "\(mailboxes[0])/tmp/\(uniqueName)", name: uniqueName, mailboxes: mailboxes)
    }

    /// Makes a finished spool durable in every recipient's `new/`. Blocking: run it off the event loop.
    public func commit(_ spool: MessageSpool.Finished) throws {
        defer { unlink(spool.path) }
        guard fsync(spool.fd) == 0 else {
            let code = errno
            close(spool.fd)
            throw MaildirError(path: spool.path, operation: "fsync", errno: code)
        }
        close(spool.fd)
        var linked: [String] = []
        do {
            for mailbox in spool.mailboxes {
                let target = "\(mailbox)/new/\(spool.name)"
                guard link(spool.path, target) == 0 else { throw MaildirError(path: target, operation: "link", errno: errno) }
                linked.append(target)
                try directories.sync("\(mailbox)/new")
            }
        } catch {
            for path in linked { unlink(path) }
            throw error
        }
    }

    /// Removes files left in `tmp/` by deliveries that were interrupted (a crash, kill -9). They were
    /// never acknowledged, so removing them loses nothing. Run at start.
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

    private func prepare(_ mailbox: String) throws {
        for sub in ["tmp", "new", "cur"] {
            let path = "\(mailbox)/\(sub)"
            if access(path, F_OK) == 0 { continue }
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw MaildirError(path: path, operation: "mkdir", errno: Self.posixCode(of: error))
            }
        }
    }

    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw MaildirError(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw MaildirError(path: path, operation: "fsync", errno: errno) }
    }

    private static func posixCode(of error: any Error) -> Int32 {
        if let posix = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError, posix.domain == NSPOSIXErrorDomain {
            return Int32(posix.code)
        }
        return EIO
    }
}

/// One message being received, streamed into a `tmp/` file so that memory stays bounded whatever its size.
/// Confined to the session's event loop; writes go to the page cache (the fsync happens in ``MaildirWriter/commit(_:)``).
public final class MessageSpool {
    public struct Finished: Sendable {
        let fd: Int32
        let path: String
        let name: String
        let mailboxes: [String]
    }

    let path: String
    let name: String
    let mailboxes: [String]
    private var fd: Int32
    private var pending: [UInt8] = []
    /// The first write error; the message is then refused at commit time.
    public private(set) var error: MaildirError?
    private static let flushThreshold = 64 * 1024

    init(path: String, name: String, mailboxes: [String]) throws {
        self.path = path
        self.name = name
        self.mailboxes = mailboxes
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw MaildirError(path: path, operation: "open", errno: errno) }
    }

    deinit {
        if fd >= 0 {
            close(fd)
            unlink(path)
        }
    }

    public func append(_ bytes: [UInt8]) {
        pending += bytes
        if pending.count >= Self.flushThreshold { flush() }
    }

    public func append(_ buffer: ByteBuffer) {
        pending += buffer.readableBytesView
        if pending.count >= Self.flushThreshold { flush() }
    }

    /// Hands the file over for commit; throws the first write error instead.
    public func finish() throws -> Finished {
        flush()
        if let error {
            discard()
            throw error
        }
        let finished = Finished(fd: fd, path: path, name: name, mailboxes: mailboxes)
        fd = -1
        return finished
    }

    public func discard() {
        guard fd >= 0 else { return }
        close(fd)
        unlink(path)
        fd = -1
    }

    private func flush() {
        guard !pending.isEmpty, error == nil, fd >= 0 else {
            pending.removeAll(keepingCapacity: true)
            return
        }
        pending.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    error = MaildirError(path: path, operation: "write", errno: errno)
                    return
                }
                offset += written
            }
        }
        pending.removeAll(keepingCapacity: true)
    }
}

public struct MaildirError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var operation: String
    public var errno: Int32

    /// ENOSPC and EDQUOT: the client should try again later (452), nothing is wrong with the message.
    public var isOutOfSpace: Bool { errno == ENOSPC || errno == EDQUOT }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}
