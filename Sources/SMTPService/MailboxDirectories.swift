import Foundation
import Glibc

/// Creates Maildirs durably, when their first message commits.
///
/// A directory entry is durable only once its parent has been fsynced (ext4 without a journal, like the
/// power-loss model of the tests, orders nothing): a Maildir made with `mkdir -p` and never synced can
/// vanish at a power cut with every message acknowledged into it. So every directory on the way from the
/// state directory to `new/` is created, when missing, and its parent fsynced before any message is
/// linked inside.
///
/// The commit that creates a Maildir holds the lock through its fsyncs: a commit to the same Maildir from
/// another session waits, rather than seeing the directory exist and acknowledging a message linked into
/// it before it is durable. A directory that exists but this process has not made durable (left by a host
/// that crashed between its mkdir and its fsync) has its parent fsynced once as well. Maildirs made
/// durable (and the folders above them) are remembered, up to ``maxRemembered``; a forgotten one costs its
/// fsyncs again, nothing more.
///
/// Blocking: called on the commit pool's threads, never on an event loop.
final class MailboxDirectories: @unchecked Sendable {
    static let maxRemembered = 10_000
    /// The Maildir subfolders (the Maildir convention).
    static let subfolders = ["tmp", "new", "cur"]

    private let root: String
    // Guards `durable` and `ancestorsSynced`, and is held through the creation of a Maildir (see the
    // type's comment).
    private let lock = NSLock()
    private var durable: Set<String> = []
    /// Every directory above the mail root has had its entry made durable, once in this process.
    private var ancestorsSynced = false

    init(root: String) { self.root = root }

    /// Makes `mailbox` (a path below the mail root) and its subfolders exist durably.
    func makeDurable(_ mailbox: String) throws {
        lock.lock()
        defer { lock.unlock() }
        if durable.contains(mailbox) { return }
        if durable.count >= Self.maxRemembered { durable.removeAll(keepingCapacity: true) }
        try syncAncestors()
        for component in Self.components(of: mailbox, below: root).dropLast() where !durable.contains(component) {
            try Self.makeDirectory(component)
            durable.insert(component)
        }
        try Self.makeDirectory(mailbox)
        for sub in Self.subfolders {
            try Self.makeDirectory("\(mailbox)/\(sub)", parentKnownDurable: true)
        }
        // One fsync of the Maildir for its three subfolders.
        try MaildirWriter.syncDirectory(mailbox)
        durable.insert(mailbox)
    }

    /// A folder of the service's own below the mail root (the spool, the journals), and the mail root above
    /// it, durably.
    func createHidden(_ folder: String) throws {
        lock.lock()
        defer { lock.unlock() }
        for component in Self.components(of: folder, below: root) {
            try Self.makeDirectory(component)
            if component != folder { durable.insert(component) }
        }
        try syncAncestors()
    }

    /// The state directory may be new too, made by someone else's `mkdir -p` (the default web site is
    /// written below it, with nothing synced): fsync every directory from the mail root's parent up to
    /// `/`, once per process, so that the entries leading to the mail are on disk. Cheap where they were
    /// already: an fsync of a clean directory.
    private func syncAncestors() throws {
        guard !ancestorsSynced else { return }
        guard let resolved = realpath(root, nil) else { throw MaildirError(path: root, operation: "realpath", errno: errno) }
        var path = String(cString: resolved)
        free(resolved)
        while path != "/" {
            path = Self.parent(of: path)
            try MaildirWriter.syncDirectory(path)
        }
        ancestorsSynced = true
    }

    /// `root`, then every directory from it down to `path`.
    private static func components(of path: String, below root: String) -> [String] {
        var result = [root]
        guard path.hasPrefix(root + "/") else { return result }
        var current = root
        for part in path.dropFirst(root.count + 1).split(separator: "/") {
            current += "/" + part
            result.append(current)
        }
        return result
    }

    /// Creates `path` if missing and fsyncs its parent, so that the entry is on disk. With
    /// `parentKnownDurable`, the caller fsyncs the parent itself once for several entries.
    private static func makeDirectory(_ path: String, parentKnownDurable: Bool = false) throws {
        var made = mkdir(path, 0o700) == 0
        if !made, errno == ENOENT, !parentKnownDurable {
            // The state directory itself is missing (nothing else made it): create it too, durably.
            let above = parent(of: path)
            guard above != path else { throw MaildirError(path: path, operation: "mkdir", errno: ENOENT) }
            try makeDirectory(above)
            made = mkdir(path, 0o700) == 0
        }
        if !made {
            let code = errno
            guard code == EEXIST else { throw MaildirError(path: path, operation: "mkdir", errno: code) }
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
                throw MaildirError(path: path, operation: "mkdir", errno: ENOTDIR)
            }
        }
        // Also when it existed: it may be the work of a host that died before its fsync.
        if !parentKnownDurable { try MaildirWriter.syncDirectory(parent(of: path)) }
    }

    private static func parent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }
}
