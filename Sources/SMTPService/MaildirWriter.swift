import Foundation
import Glibc
import NIOCore

/// Durable delivery into Maildirs (`<root>/<domain>/<local-part>/{tmp,new,cur}`).
///
/// A message is streamed into the shared spool folder `<root>/.spool/` while it arrives (``MessageSpool``),
/// so that no Maildir is created for a transaction that never commits. When it is complete,
/// ``commit(_:)`` fsyncs it, makes every recipient's Maildir durable (``MailboxDirectories``: created
/// now if new, each new directory fsynced in its parent), hard-links the message into every `new/`,
/// fsyncs those directories (one fsync serving every concurrent commit to a directory:
/// ``DirectorySyncer``) and removes the spool name. Only then is the client told 250. If anything
/// fails, the links already made are removed again: `new/` never holds a message whose client was told
/// it was not accepted, and never a partial one.
///
/// Every durable step here is an fsync of the file or directory concerned, never sync(2) or syncfs(2)
/// (only the journal's checkpoint, behind the 250s, uses syncfs: ``MailJournal``).
public struct MaildirWriter: Sendable {
    public let root: String
    /// Where messages are received before they commit: on the same file system as every Maildir, so
    /// that they can be hard-linked.
    public var spoolDirectory: String { root + "/.spool" }
    /// The write-ahead journals (`smtp.commit = journal`), on the same file system as the Maildirs.
    public var journalDirectory: String { root + "/.journal" }
    /// The host name as Maildir file names carry it (`/` and `:` escaped, as the convention says).
    public let hostName: String
    /// Shares fsyncs of `new/` between concurrent commits.
    private let directories = DirectorySyncer()
    let mailboxes: MailboxDirectories

    public init(root: String, hostName: String) {
        self.root = root
        self.hostName = hostName.replacingOccurrences(of: "/", with: "\\057").replacingOccurrences(of: ":", with: "\\072")
        mailboxes = MailboxDirectories(root: root)
    }

    /// Local parts that are safe as one directory name.
    public static func isSafeLocalPart(_ localPart: String) -> Bool {
        !localPart.isEmpty && localPart.utf8.count <= 64 && !localPart.hasPrefix(".")
            && localPart.unicodeScalars.allSatisfy { scalar in
                scalar.isASCII && scalar.value > 0x20 && scalar != "/" && scalar != "\\" && scalar.value != 0x7F
            }
    }

    /// The Maildir of `local@domain` (an address the SMTP engine accepted: it has an `@`).
    public func mailbox(for recipient: String) -> String {
        guard let at = recipient.lastIndex(of: "@") else { return "\(root)/\(recipient)" }
        return "\(root)/\(recipient[recipient.index(after: at)...].lowercased())/\(recipient[..<at])"
    }

    /// Whether `local@domain` has a Maildir (`smtp.recipients = existing`).
    public func mailboxExists(_ recipient: String) -> Bool {
        var info = stat()
        return stat(mailbox(for: recipient) + "/new", &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// Opens a spool for a message to `recipients`, named `uniqueName` (the Maildir file name). Creates
    /// no Maildir: that happens when the message commits.
    public func openSpool(recipients: [String], uniqueName: String) throws -> MessageSpool {
        let mailboxes = Array(Set(recipients.map(mailbox(for:)))).sorted()
        let path = "\(spoolDirectory)/\(uniqueName)"
        do {
            return try MessageSpool(path: path, name: uniqueName, mailboxes: mailboxes)
        } catch let error as MaildirError where error.errno == ENOENT {
            // The spool folder is made at start; this host's state directory was emptied since.
            try self.mailboxes.createHidden(spoolDirectory)
            return try MessageSpool(path: path, name: uniqueName, mailboxes: mailboxes)
        }
    }

    /// Makes a finished spool durable in every recipient's `new/`. Blocking: run it off the event loop.
    public func commit(_ spool: MessageSpool.Finished) throws {
        defer { unlink(spool.path) }
        // POWERLOSS_MUTANT_* exist only for scripts/powerloss/mutant-check.sh (PowerLossTests): a build
        // that proves the power-loss suite catches a missing flush. Never set them in a real build.
        #if !POWERLOSS_MUTANT_SKIP_SPOOL_FSYNC
        guard fsync(spool.fd) == 0 else {
            let code = errno
            close(spool.fd)
            throw MaildirError(path: spool.path, operation: "fsync", errno: code)
        }
        #endif
        close(spool.fd)
        var linked: [String] = []
        do {
            for mailbox in spool.mailboxes {
                try mailboxes.makeDurable(mailbox)
                let target = "\(mailbox)/new/\(spool.name)"
                guard link(spool.path, target) == 0 else { throw MaildirError(path: target, operation: "link", errno: errno) }
                linked.append(target)
                #if !POWERLOSS_MUTANT_SKIP_NEW_FSYNC
                try directories.sync("\(mailbox)/new")
                #endif
            }
        } catch {
            for path in linked { unlink(path) }
            throw error
        }
    }

    /// Prepares the spool folder and removes what interrupted deliveries (a crash, kill -9, a power cut)
    /// left in it. They were never acknowledged, so removing them loses nothing — with one exception kept:
    /// a leftover whose inode some `new/` also names. After a power cut the disk can hold both names with
    /// a link count of one (the link reached the disk, the count did not); unlinking the spool name would
    /// then free the inode that `new/` still names. With the journal, a leftover may also be a message
    /// acknowledged and not yet delivered: the journal's replay, which runs first, delivered it from its
    /// record. Files of another live process of the service are left alone. Run at start, before any session.
    /// - Returns: the files removed, and those kept because a Maildir names them.
    public func recoverSpool() throws -> (removed: Int, kept: Int) {
        try recoverSpool(linkCount: { Int($0.st_nlink) })
    }

    /// - Parameter linkCount: the link count as the disk has it (tests model a stale one).
    func recoverSpool(linkCount: (stat) -> Int) throws -> (removed: Int, kept: Int) {
        try mailboxes.createHidden(spoolDirectory)
        let manager = FileManager.default
        let leftovers = ((try? manager.contentsOfDirectory(atPath: spoolDirectory)) ?? []).filter { !$0.hasPrefix(".") }
        guard !leftovers.isEmpty else { return (0, 0) }
        var linkedSomewhere: Set<String> = []
        let allMailboxes = ((try? manager.contentsOfDirectory(atPath: root)) ?? []).filter { !$0.hasPrefix(".") }.flatMap { domain in
            ((try? manager.contentsOfDirectory(atPath: "\(root)/\(domain)")) ?? []).map { "\(root)/\(domain)/\($0)" }
        }
        // Another process of this service (a worker draining beside its successor) is still writing these.
        let inUse = Set(leftovers.filter(Self.writerIsAlive))
        for name in leftovers where !inUse.contains(name) {
            var spooled = stat()
            // A link count the disk knows to be two or more: unlinking the spool name is safe.
            guard stat("\(spoolDirectory)/\(name)", &spooled) == 0, linkCount(spooled) < 2 else { continue }
            for mailbox in allMailboxes {
                var delivered = stat()
                if stat("\(mailbox)/new/\(name)", &delivered) == 0, delivered.st_ino == spooled.st_ino, delivered.st_dev == spooled.st_dev {
                    linkedSomewhere.insert(name)
                    break
                }
            }
        }
        var removed = 0
        for name in leftovers where !linkedSomewhere.contains(name) && !inUse.contains(name) && unlink("\(spoolDirectory)/\(name)") == 0 {
            removed += 1
        }
        return (removed, linkedSomewhere.count)
    }

    /// Whether the spool file `name` (`<seconds>.M<µs>P<pid>Q<n>.<host>`, ``MaildirNames``) belongs to
    /// another live process.
    static func writerIsAlive(_ name: String) -> Bool {
        let parts = name.split(separator: ".", maxSplits: 2)
        guard parts.count == 3, let p = parts[1].firstIndex(of: "P"), let q = parts[1].firstIndex(of: "Q"), p < q,
              let pid = Int32(parts[1][parts[1].index(after: p)..<q]), pid > 0, pid != getpid()
        else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw MaildirError(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw MaildirError(path: path, operation: "fsync", errno: errno) }
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
        /// The file's length and CRC-32C (what the journal's record carries).
        let length: UInt64
        let crc: UInt32
    }

    let path: String
    let name: String
    let mailboxes: [String]
    private var fd: Int32
    private var pending: [UInt8] = []
    private var length: UInt64 = 0
    private var crc: UInt32 = 0
    /// The first write error; the message is then refused at commit time.
    public private(set) var error: MaildirError?
    private static let flushThreshold = 64 * 1024

    init(path: String, name: String, mailboxes: [String]) throws {
        self.path = path
        self.name = name
        self.mailboxes = mailboxes
        // Readable too: the journal copies the content from it.
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
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
        let finished = Finished(fd: fd, path: path, name: name, mailboxes: mailboxes, length: length, crc: crc)
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
        crc = JournalFormat.crc(pending, continuing: crc)
        length += UInt64(pending.count)
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
