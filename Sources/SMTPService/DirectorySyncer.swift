import Foundation

/// Makes new directory entries durable for many commits with few fsyncs (group commit).
///
/// A commit that has linked its message into `new/` needs an fsync of `new/` that *started after* the
/// link; one such fsync serves every commit waiting on that directory when it starts. While one is in
/// flight, the commits that arrive wait for the next, which the first of them starts as soon as the
/// current one ends. A journaling file system merges concurrent fsyncs into one journal commit by itself;
/// ext4 without a journal (the benchmark machines) flushes the device once per fsync.
///
/// Blocking: called on the commit pool's threads, never on an event loop.
final class DirectorySyncer: @unchecked Sendable {
    private struct Directory {
        /// fsyncs begun and finished, counted; at most one in flight per directory.
        var started = 0
        var finished = 0
        var outcome: Result<Void, any Error> = .success(())
        /// Commits inside ``sync(_:)`` for this directory; at zero (and no fsync in flight) the entry is
        /// dropped, so the table holds only directories being synced, not every Maildir ever written.
        var users = 0
    }

    // Guards `directories`; commits sleep on it until the fsync they need has finished.
    private let condition = NSCondition()
    private var directories: [String: Directory] = [:]
    /// The fsync itself (replaced in tests to observe the grouping).
    private let fsyncDirectory: @Sendable (String) throws -> Void

    init(fsyncDirectory: @escaping @Sendable (String) throws -> Void = MaildirWriter.syncDirectory) {
        self.fsyncDirectory = fsyncDirectory
    }

    /// Returns once an fsync of `path` that began after this call has succeeded; throws its error.
    func sync(_ path: String) throws {
        condition.lock()
        defer { condition.unlock() }
        directories[path, default: Directory()].users += 1
        defer {
            directories[path]?.users -= 1
            if let directory = directories[path], directory.users == 0, directory.started == directory.finished {
                directories.removeValue(forKey: path)
            }
        }
        let needed = directories[path]!.started + 1
        while true {
            var directory = directories[path]!
            // A later fsync than the one needed serves as well: it too began after the link.
            if directory.finished >= needed { return try directory.outcome.get() }
            if directory.started > directory.finished {
                condition.wait()
                continue
            }
            directory.started += 1
            let generation = directory.started
            directories[path] = directory
            condition.unlock()
            let outcome = Result { try fsyncDirectory(path) }
            condition.lock()
            directories[path]?.finished = generation
            directories[path]?.outcome = outcome
            condition.broadcast()
        }
    }

    /// Directories with an entry in the table (for tests of its bound).
    var tracked: Int {
        condition.lock()
        defer { condition.unlock() }
        return directories.count
    }
}
