import Foundation
import Glibc
import NIOCore
import NIOPosix

/// The Maildir side of the journal (`smtp.commit = journal`): committing through it, delivering behind the
/// 250, and delivering again what a replay finds.
extension MaildirWriter {
    func createServiceFolder(_ folder: String) throws { try mailboxes.createHidden(folder) }

    /// Commits a finished spool through `journal`: `promise` succeeds once its record is durable (then the
    /// client is told 250), and its delivery into the Maildirs is left to `deliveries` — to `pool`, a
    /// thread each, where a delivery fsyncs its file (no `syncfs` checkpoints). Nothing here blocks: the
    /// journal's writer thread completes the commit. A message the journal cannot take (too large for it,
    /// or the journal broken by an earlier failure) is committed the direct way (``commit(_:)``) on `pool`.
    /// Fails with ``MailJournal/JournalError/full`` when no space came free in time, with
    /// ``MailJournal/JournalError/notDurable(_:)`` when the flush failed, and with the direct way's errors:
    /// nothing is then acknowledged.
    func commit(_ spool: MessageSpool.Finished, through journal: MailJournal, deliveringWith deliveries: DeliveryQueue,
                directOn pool: NIOThreadPool, completing promise: EventLoopPromise<Void>,
                onDeliveryError: @escaping @Sendable (any Error) -> Void) {
        let relative = spool.mailboxes.map { String($0.dropFirst(root.count + 1)) }
        // A name the replay would refuse (nothing the SMTP engine accepts today) goes the direct way.
        guard relative.count <= Int(UInt16.max), spool.mailboxes.allSatisfy({ $0.hasPrefix(root + "/") }),
              JournalFormat.isSafeComponent(spool.name), relative.allSatisfy(JournalFormat.isSafeMailbox)
        else { return commitDirect(spool, on: pool, completing: promise) }
        journal.commit(JournalFormat.Metadata(name: spool.name, mailboxes: relative), contentFile: spool.fd,
                       contentLength: spool.length, contentCRC: spool.crc) { result in
            switch result {
            case .success(let sequence):
                promise.succeed(())
                let fsyncsFile = !journal.syncsFileSystem
                let deliver: MailJournal.Delivery = { try self.deliverSpooled(spool, fsyncingFile: fsyncsFile) }
                let job: DeliveryQueue.Job = { active in
                    // Not run by a pool that is stopping (inactive): leave it to the journal's retries.
                    guard active else { return journal.deliveryFailed(sequence, retry: deliver) }
                    do {
                        journal.delivered(sequence, directories: try deliver())
                    } catch {
                        onDeliveryError(error)
                        journal.deliveryFailed(sequence, retry: deliver)
                    }
                }
                if fsyncsFile {
                    // Each delivery waits for its file's fsync: side by side, a pool thread each.
                    pool.submit { state in
                        if case .active = state { job(true) } else { job(false) }
                    }
                } else {
                    deliveries.add(job)
                }
            case .failure(.tooLarge), .failure(.broken):
                self.commitDirect(spool, on: pool, completing: promise)
            case .failure(let error):
                // A record whose flush failed may still reach the disk and be replayed: the client's retry
                // would then make a second copy. Delivering twice is what SMTP allows (RFC 5321 §6.1);
                // losing it is not.
                self.abandon(spool)
                promise.fail(error)
            }
        }
    }

    /// ``commit(_:)`` on `pool`: it blocks on two fsyncs. A pool that has stopped fails `promise` and
    /// removes the spool.
    func commitDirect(_ spool: MessageSpool.Finished, on pool: NIOThreadPool, completing promise: EventLoopPromise<Void>) {
        pool.submit { state in
            guard case .active = state else {
                self.abandon(spool)
                return promise.fail(NIOThreadPoolError.ThreadPoolInactive())
            }
            promise.completeWith(Result { try self.commit(spool) })
        }
    }

    private func abandon(_ spool: MessageSpool.Finished) {
        close(spool.fd)
        unlink(spool.path)
    }

    /// Behind the 250: links the spooled message into every recipient's `new/` (where it shows at once),
    /// fsyncs the file if `fsyncingFile` (otherwise the checkpoint's `syncfs` covers it), and removes the
    /// spool name. The `new/` folders returned are made durable by the journal's checkpoint. Safe to run
    /// again after a failure.
    func deliverSpooled(_ spool: MessageSpool.Finished, fsyncingFile: Bool) throws -> [String] {
        for mailbox in spool.mailboxes {
            try mailboxes.makeDurable(mailbox)
            let target = "\(mailbox)/new/\(spool.name)"
            if link(spool.path, target) != 0 {
                let code = errno
                var linked = stat()
                var spooled = stat()
                // Linked by an earlier attempt.
                guard code == EEXIST, stat(target, &linked) == 0, fstat(spool.fd, &spooled) == 0, linked.st_ino == spooled.st_ino,
                      linked.st_dev == spooled.st_dev
                else { throw MaildirError(path: target, operation: "link", errno: code) }
            }
        }
        if fsyncingFile, fsync(spool.fd) != 0 { throw MaildirError(path: spool.path, operation: "fsync", errno: errno) }
        close(spool.fd)
        unlink(spool.path)
        return spool.mailboxes.map { "\($0)/new" }
    }

    /// A replayed record: makes sure every recipient's Maildir holds exactly `content` under the record's
    /// name — in `new/`, or in `cur/` if a mail reader moved it there (`name` or `name:2,…`) — writing
    /// it again (through `tmp/`, renamed over a torn copy) where it is missing or differs. Files found
    /// right are fsynced all the same: a host killed before its checkpoint may have left them in the page
    /// cache only. Returns the folders whose entries must be fsynced.
    func redeliver(_ metadata: JournalFormat.Metadata, content: [UInt8]) throws -> [String] {
        var folders: [String] = []
        for relative in metadata.mailboxes {
            let mailbox = "\(root)/\(relative)"
            try mailboxes.makeDurable(mailbox)
            let read = ((try? FileManager.default.contentsOfDirectory(atPath: "\(mailbox)/cur")) ?? [])
                .filter { $0 == metadata.name || $0.hasPrefix(metadata.name + ":") }
                .map { "\(mailbox)/cur/\($0)" }
            let candidates = ["\(mailbox)/new/\(metadata.name)"] + read
            if let intact = candidates.first(where: { Self.holds($0, exactly: content) }) {
                let fd = open(intact, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                guard fd >= 0 else { throw MaildirError(path: intact, operation: "open", errno: errno) }
                defer { close(fd) }
                guard fsync(fd) == 0 else { throw MaildirError(path: intact, operation: "fsync", errno: errno) }
                folders.append((intact as NSString).deletingLastPathComponent)
                continue
            }
            // Missing, or torn by a power cut (linked before its data reached the disk): written anew.
            let target = read.first ?? "\(mailbox)/new/\(metadata.name)"
            let staging = "\(mailbox)/tmp/\(metadata.name)"
            let fd = open(staging, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw MaildirError(path: staging, operation: "open", errno: errno) }
            do {
                try content.withUnsafeBytes { try MailJournal.writeAll(fd, $0, at: 0, path: staging) }
                guard fsync(fd) == 0 else { throw MaildirError(path: staging, operation: "fsync", errno: errno) }
                close(fd)
            } catch {
                close(fd)
                unlink(staging)
                throw error
            }
            guard rename(staging, target) == 0 else { throw MaildirError(path: target, operation: "rename", errno: errno) }
            folders.append((target as NSString).deletingLastPathComponent)
        }
        return folders
    }

    private static func holds(_ path: String, exactly content: [UInt8]) -> Bool {
        guard let data = FileManager.default.contents(atPath: path) else { return false }
        return data.elementsEqual(content)
    }
}
