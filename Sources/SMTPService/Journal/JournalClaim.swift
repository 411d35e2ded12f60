import Foundation
import Glibc
import Logging

/// How an SMTP instance gets its journal: under `<mail root>/.journal/`, files `journal.N`, each owned by
/// the process holding its `flock`. At claim, every journal no live process holds (its owner crashed, was
/// killed, or lost power) is replayed into the Maildirs first; the first of them of the right size becomes
/// this instance's, the others are removed. With none left, a new one is made. Several processes can
/// therefore run the service at once (a worker draining beside its successor) without sharing a file.
///
/// Replay: every record after the file's checkpoint, of the checkpoint's epoch, with consecutive sequence
/// numbers and both CRCs right, is delivered again (``MaildirWriter/redeliver(_:content:)``: idempotent,
/// the Maildir name comes from the record); the first record that is not so ends the log — a torn record
/// was never acknowledged. Then the deliveries are made durable and a checkpoint of a new epoch written:
/// records of the old epoch that lie beyond (left from an earlier lap, or written and never flushed) can
/// never be taken for new ones.
enum JournalClaim {
    static let maxFiles = 64

    struct Damaged: Error, CustomStringConvertible {
        var path: String
        var reason: String
        var description: String { "\(path): \(reason)" }
    }

    static func claim(writer: MaildirWriter, size: UInt64, logger: Logger, spaceWait: TimeInterval = 5,
                      flush: @escaping @Sendable (Int32) -> Int32 = { fdatasync($0) },
                      syncFileSystem: (@Sendable (Int32) -> Int32)? = nil) throws -> MailJournal {
        let directory = writer.journalDirectory
        try writer.createServiceFolder(directory)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasPrefix("journal.") && Int($0.dropFirst("journal.".count)) != nil }.sorted()
        var claimed: (path: String, fd: Int32, checkpoint: JournalFormat.Checkpoint)?
        for name in names {
            let path = "\(directory)/\(name)"
            let fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { continue }
            // Held by a live process: its journal, not ours to replay.
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                close(fd)
                continue
            }
            do {
                let (checkpoint, replayed) = try replay(fd: fd, path: path, writer: writer)
                if replayed > 0 {
                    logger.notice("journal replayed: acknowledged messages delivered again", metadata: ["journal": "\(path)", "messages": "\(replayed)"])
                }
                if claimed == nil, checkpoint.fileSize == size {
                    claimed = (path, fd, checkpoint)
                    continue
                }
            } catch let damaged as Damaged {
                // Kept for an operator to look at: nothing in it can be trusted to replay.
                logger.critical("journal damaged, set aside", metadata: ["journal": "\(path)", "error": "\(damaged)"])
                rename(path, path + ".damaged")
            } catch {
                // A delivery the replay could not make (a Maildir that cannot be written, a full disk): the
                // journal stays as it is for the next attempt, and the instance does not start.
                close(fd)
                if let claimed { close(claimed.fd) }
                throw error
            }
            unlink(path)
            close(fd)
        }
        if claimed == nil {
            for number in 0..<maxFiles where access("\(directory)/journal.\(number)", F_OK) != 0 {
                if let made = try create(path: "\(directory)/journal.\(number)", size: size) {
                    claimed = made
                    break
                }
            }
        }
        guard let claimed else { throw Damaged(path: directory, reason: "no journal file could be claimed (\(maxFiles) in use)") }
        return MailJournal(path: claimed.path, fd: claimed.fd, checkpoint: claimed.checkpoint, logger: logger, spaceWait: spaceWait,
                           flush: flush, syncFileSystem: syncFileSystem, mailFolders: [writer.root])
    }

    /// Replays the journal open at `fd` (locked), then writes a checkpoint of a new epoch after what it
    /// replayed. Returns that checkpoint and the number of messages replayed.
    static func replay(fd: Int32, path: String, writer: MaildirWriter) throws -> (JournalFormat.Checkpoint, Int) {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw MaildirError(path: path, operation: "fstat", errno: errno) }
        let fileSize = UInt64(max(info.st_size, 0))
        let headSize = UInt64(JournalFormat.headSize)
        var head = [UInt8](repeating: 0, count: JournalFormat.headSize)
        guard try read(fd, into: &head, at: 0, path: path), let found = JournalFormat.latestCheckpoint(in: head) else {
            throw Damaged(path: path, reason: "no valid checkpoint")
        }
        guard found.fileSize == fileSize else { throw Damaged(path: path, reason: "checkpoint for \(found.fileSize) bytes, file has \(fileSize)") }
        let capacity = fileSize - headSize
        var position = found.offset
        var expected = found.nextSequence
        var consumed: UInt64 = 0
        var directories: Set<String> = []
        var replayed = 0
        var header = [UInt8](repeating: 0, count: JournalFormat.recordHeaderSize)
        while consumed < capacity {
            if fileSize - position < UInt64(JournalFormat.recordHeaderSize) {
                consumed += fileSize - position
                position = headSize
                continue
            }
            guard try read(fd, into: &header, at: position, path: path),
                  let record = JournalFormat.decodeRecordHeader(header[...]),
                  record.epoch == found.epoch, record.sequence == expected,
                  let stored = record.storedLength, stored <= fileSize - position, stored <= capacity / 4
            else { break }
            var metadataBytes = [UInt8](repeating: 0, count: record.metadataLength)
            guard try read(fd, into: &metadataBytes, at: position + UInt64(JournalFormat.recordHeaderSize), path: path),
                  let decoded = JournalFormat.checkHead(record, headerBytes: header[...], metadata: metadataBytes[...])
            else { break }
            guard let metadata = decoded else {
                // A wrap marker: the record carrying this sequence number starts the data area.
                consumed += fileSize - position
                position = headSize
                continue
            }
            var content = [UInt8](repeating: 0, count: Int(record.contentLength))
            let contentStart = position + UInt64(JournalFormat.recordHeaderSize + record.metadataLength)
            guard try read(fd, into: &content, at: contentStart, path: path), JournalFormat.crc(content) == record.contentCRC else { break }
            directories.formUnion(try writer.redeliver(metadata, content: content))
            replayed += 1
            expected += 1
            consumed += stored
            position += stored
            if position == fileSize { position = headSize }
        }
        for directory in directories.sorted() { try MaildirWriter.syncDirectory(directory) }
        let checkpoint = JournalFormat.Checkpoint(epoch: found.epoch &+ 1, nextSequence: expected, offset: position, fileSize: fileSize)
        try writeSlot(checkpoint, fd: fd, path: path)
        return (checkpoint, replayed)
    }

    /// A new journal of `size` bytes, zero-filled so that appending never allocates (the `fdatasync` of a
    /// record then writes data only), locked before it gets its name. Nil if another process is making it.
    static func create(path: String, size: UInt64) throws -> (path: String, fd: Int32, checkpoint: JournalFormat.Checkpoint)? {
        let staging = path + ".new"
        var fd = open(staging, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        if fd < 0, errno == EEXIST {
            // Left by a process that died making it, unless one is making it now (it holds the lock).
            let stale = open(staging, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
            guard stale >= 0 else { return nil }
            guard flock(stale, LOCK_EX | LOCK_NB) == 0 else {
                close(stale)
                return nil
            }
            unlink(staging)
            close(stale)
            fd = open(staging, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        }
        guard fd >= 0 else { throw MaildirError(path: staging, operation: "open", errno: errno) }
        do {
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { throw MaildirError(path: staging, operation: "flock", errno: errno) }
            let zeros = [UInt8](repeating: 0, count: 1 << 20)
            var offset: UInt64 = 0
            while offset < size {
                let count = Int(min(UInt64(zeros.count), size - offset))
                try zeros.withUnsafeBytes { try MailJournal.writeAll(fd, UnsafeRawBufferPointer(rebasing: $0.prefix(count)), at: offset, path: staging) }
                offset += UInt64(count)
            }
            let checkpoint = JournalFormat.Checkpoint(epoch: 1, nextSequence: 1, offset: UInt64(JournalFormat.headSize), fileSize: size)
            try writeSlot(checkpoint, fd: fd, path: staging)
            guard fsync(fd) == 0 else { throw MaildirError(path: staging, operation: "fsync", errno: errno) }
            guard rename(staging, path) == 0 else { throw MaildirError(path: path, operation: "rename", errno: errno) }
            try MaildirWriter.syncDirectory((path as NSString).deletingLastPathComponent)
            return (path, fd, checkpoint)
        } catch {
            unlink(staging)
            close(fd)
            throw error
        }
    }

    /// Writes `checkpoint` into the first slot and flushes it.
    static func writeSlot(_ checkpoint: JournalFormat.Checkpoint, fd: Int32, path: String) throws {
        try JournalFormat.encode(checkpoint).withUnsafeBytes { try MailJournal.writeAll(fd, $0, at: UInt64(JournalFormat.slotOffsets[0]), path: path) }
        guard fdatasync(fd) == 0 else { throw MaildirError(path: path, operation: "fdatasync", errno: errno) }
    }

    /// Fills `buffer` from `offset`; false if the file ends first.
    private static func read(_ fd: Int32, into buffer: inout [UInt8], at offset: UInt64, path: String) throws -> Bool {
        var done = 0
        let total = buffer.count
        while done < total {
            let count = try buffer.withUnsafeMutableBytes { raw in
                try MailJournal.readSome(fd, UnsafeMutableRawBufferPointer(rebasing: raw[done...]), count: total - done,
                                         at: offset + UInt64(done), path: path)
            }
            if count == 0 { return false }
            done += count
        }
        return true
    }
}
