import CJournal
import Foundation
import Glibc
import Logging

/// The SMTP service's write-ahead journal (`smtp.commit = journal`): a message is acknowledged once its
/// record is in a preallocated file and an `fdatasync` that began after the record was written has
/// returned; its delivery into the Maildirs follows, and a checkpoint later frees its space.
///
/// Contract:
/// - ``append(_:contentFile:contentLength:contentCRC:)`` writes one record; appends are serialized, so
///   the records written always form a prefix of the sequence, and a flush covers a prefix: a record can
///   be acknowledged only if every earlier one is as durable as it.
/// - ``waitDurable(_:)`` returns once a flush covering the record has succeeded. One flush serves every
///   commit waiting when it starts (group commit); the ones arriving meanwhile share the next.
/// - A failed write or flush breaks the journal: every commit not yet durable fails (451), and so do later
///   ones (``JournalError/broken``); after a failed `fdatasync` the kernel may have dropped the pages,
///   so a later successful one proves nothing. The next start replays what is on the disk.
/// - Deliveries are reported with ``delivered(_:directories:)``; the checkpointer thread fsyncs the
///   `new/` folders of the delivered prefix of records, then writes a checkpoint slot and flushes it. Only
///   then is their space reused. A failed delivery is retried by the checkpointer until it succeeds; until
///   then the journal fills and, past ``spaceWait``, commits get ``JournalError/full`` (452).
/// - The file is one process's alone: it holds an exclusive `flock` for as long as it is open, and a
///   journal whose owner died is replayed by the next instance that claims files (``MailJournalSet``).
final class MailJournal: @unchecked Sendable {
    enum JournalError: Error, CustomStringConvertible {
        /// No space came free within the wait: the checkpoint is behind (deliveries failing).
        case full
        /// A write or flush failed before; nothing more is acknowledged through this journal.
        case broken(MaildirError)
        /// The record would take more than a quarter of the ring: the message goes the direct way.
        case tooLarge

        var description: String {
            switch self {
            case .full: "the journal is full"
            case .broken(let error): "the journal is unusable since \(error)"
            case .tooLarge: "the message is too large for the journal"
            }
        }
    }

    /// A delivery that the checkpointer runs again (it failed before): returns the `new/` folders it linked into.
    typealias Delivery = @Sendable () throws -> [String]

    private struct Pending {
        /// Logical end of the record in the ring.
        var end: UInt64
        var directories: [String]?
        var retry: Delivery?
    }

    let path: String
    /// How long a commit waits for space before it is refused.
    let spaceWait: TimeInterval
    let checkpointInterval: TimeInterval
    private let fd: Int32
    private let fileSize: UInt64
    /// The ring's size: the file after its head.
    private let capacity: UInt64
    private let epoch: UInt64
    private let logger: Logger

    /// Serializes writes into the ring (see the contract); taken before `state`, never inside it.
    private let appendLock = NSLock()
    // Guards everything below. Commits wait on it for their flush or for space, the checkpointer for work.
    private let state = NSCondition()
    private var nextSequence: UInt64
    /// Logical positions (they only grow; the file offset is `head size + position % capacity`).
    private var head: UInt64
    private var tail: UInt64
    /// The last record written, and the last one a successful flush covers.
    private var written: UInt64
    private var durable: UInt64
    private var flushing = false
    private var broken: MaildirError?
    private var pending: [UInt64: Pending] = [:]
    /// The last record a checkpoint covers.
    private var checkpointed: UInt64
    private var nextSlot = 1
    private var checkpointWanted = false
    /// Set by ``close(checkpointing:)`` (to its argument); the checkpointer closes the file on its way out.
    private var closed: Bool?
    /// `fdatasync`, replaced in tests by one that fails.
    private let flush: @Sendable (Int32) -> Int32

    /// Takes over an opened, locked, replayed journal file: the next record goes at `checkpoint`.
    init(path: String, fd: Int32, checkpoint: JournalFormat.Checkpoint, logger: Logger,
         spaceWait: TimeInterval = 5, checkpointInterval: TimeInterval = 0.1, flush: @escaping @Sendable (Int32) -> Int32 = { fdatasync($0) }) {
        self.path = path
        self.flush = flush
        self.fd = fd
        self.logger = logger
        self.spaceWait = spaceWait
        self.checkpointInterval = checkpointInterval
        fileSize = checkpoint.fileSize
        capacity = checkpoint.fileSize - UInt64(JournalFormat.headSize)
        epoch = checkpoint.epoch
        nextSequence = checkpoint.nextSequence
        written = checkpoint.nextSequence - 1
        durable = written
        checkpointed = written
        head = checkpoint.offset - UInt64(JournalFormat.headSize)
        tail = head
        let thread = Thread { [weak self] in self?.runCheckpoints() }
        thread.name = "smtp-journal-checkpoint"
        thread.start()
    }

    /// Largest record the ring takes; a larger message is committed the direct way.
    var largestRecord: UInt64 { capacity / 4 }

    /// Writes a message's record: the metadata, then `contentLength` bytes copied from `contentFile`
    /// (from its start). Blocking; waits up to ``spaceWait`` for space. Returns the record's sequence number.
    func append(_ metadata: JournalFormat.Metadata, contentFile: Int32, contentLength: UInt64, contentCRC: UInt32) throws -> UInt64 {
        appendLock.lock()
        defer { appendLock.unlock() }
        var sequence: UInt64 = 0
        let recordHead: [UInt8]
        var wrapAt: UInt64?
        var start: UInt64 = 0
        do {
            state.lock()
            defer { state.unlock() }
            if let broken { throw JournalError.broken(broken) }
            sequence = nextSequence
            recordHead = JournalFormat.encodeRecordHead(kind: .message, epoch: epoch, sequence: sequence, metadata: metadata,
                                                        contentLength: contentLength, contentCRC: contentCRC)
            let (unpadded, overflow) = UInt64(recordHead.count).addingReportingOverflow(contentLength)
            guard !overflow, unpadded <= largestRecord else { throw JournalError.tooLarge }
            let length = (unpadded + 7) & ~7
            let deadline = Date(timeIntervalSinceNow: spaceWait)
            while true {
                if let broken { throw JournalError.broken(broken) }
                start = tail
                let room = capacity - start % capacity
                // A record never wraps around the end: it starts over at the beginning of the data area,
                // behind a wrap marker when there is room for one (the reader jumps on its own otherwise).
                if room < length { start += room }
                if start + length - head <= capacity {
                    wrapAt = start == tail ? nil : tail
                    tail = start + length
                    break
                }
                checkpointWanted = true
                state.broadcast()
                guard state.wait(until: deadline) else { throw JournalError.full }
            }
            nextSequence += 1
            pending[sequence] = Pending(end: tail)
        }
        do {
            if let wrapAt, capacity - wrapAt % capacity >= UInt64(JournalFormat.recordHeaderSize) {
                let marker = JournalFormat.encodeRecordHead(kind: .wrap, epoch: epoch, sequence: sequence, metadata: nil,
                                                            contentLength: 0, contentCRC: 0)
                try write(marker, at: offset(of: wrapAt))
            }
            let at = offset(of: start)
            try write(recordHead, at: at)
            try copy(from: contentFile, length: contentLength, to: at + UInt64(recordHead.count))
        } catch let error as MaildirError {
            // A hole in the sequence would end every later replay there: nothing more goes in.
            state.lock()
            pending[sequence] = nil
            breakJournal(error)
            state.unlock()
            throw JournalError.broken(error)
        }
        state.lock()
        written = sequence
        state.unlock()
        return sequence
    }

    /// Returns once a flush that began after record `sequence` was written has succeeded (group commit).
    func waitDurable(_ sequence: UInt64) throws {
        state.lock()
        defer { state.unlock() }
        while true {
            if durable >= sequence { return }
            if let broken { throw JournalError.broken(broken) }
            if flushing {
                state.wait()
                continue
            }
            flushing = true
            let target = written
            state.unlock()
            let failed = flush(fd) == 0 ? nil : MaildirError(path: path, operation: "fdatasync", errno: errno)
            state.lock()
            flushing = false
            if let failed {
                breakJournal(failed)
            } else {
                durable = max(durable, target)
            }
            state.broadcast()
        }
    }

    /// Record `sequence` is in every recipient's `new/` and its file is fsynced; `directories` are the
    /// `new/` folders still to be fsynced before a checkpoint may cover it.
    func delivered(_ sequence: UInt64, directories: [String]) {
        state.lock()
        pending[sequence]?.directories = directories
        pending[sequence]?.retry = nil
        state.unlock()
    }

    /// Record `sequence`'s delivery failed: the checkpointer runs `retry` until it succeeds.
    func deliveryFailed(_ sequence: UInt64, retry: @escaping Delivery) {
        state.lock()
        pending[sequence]?.retry = retry
        state.unlock()
    }

    /// Stops the checkpointer, after a last checkpoint of what was delivered if `checkpointing` (without,
    /// the file is left as a crash leaves it), and closes the file once it has stopped; commits fail from
    /// now on. A host exits without: its journal is closed by the exit. Returns when the file is closed.
    func close(checkpointing: Bool = true) {
        state.lock()
        defer { state.unlock() }
        if broken == nil { broken = MaildirError(path: path, operation: "close", errno: EBADF) }
        closed = checkpointing
        checkpointWanted = true
        state.broadcast()
        while !fileClosed { state.wait() }
    }
    private var fileClosed = false

    /// The end of a graceful stop: waits up to `timeout` for the deliveries still running behind their
    /// 250s, then closes with a last checkpoint, so that the next start has nothing to replay. (What is
    /// not delivered by then is replayed at the next claim: nothing is lost either way.)
    func finish(within timeout: TimeInterval) {
        let deadline = Date(timeIntervalSinceNow: timeout)
        state.lock()
        // Deliveries do not signal (every one would wake every waiter): look every 10 ms.
        while pending.values.contains(where: { $0.directories == nil }), broken == nil, Date() < deadline {
            _ = state.wait(until: min(deadline, Date(timeIntervalSinceNow: 0.01)))
        }
        state.unlock()
        close()
    }

    /// Records acknowledged and not yet covered by a checkpoint.
    var uncheckpointed: Int {
        state.lock()
        defer { state.unlock() }
        return pending.count
    }

    // MARK: The checkpointer

    private func runCheckpoints() {
        while true {
            state.lock()
            let due = Date(timeIntervalSinceNow: checkpointInterval)
            // Woken early by every flush and delivery (they share the condition): wait on until due.
            while !checkpointWanted, closed == nil, state.wait(until: due) {}
            let finishing = closed
            checkpointWanted = false
            if finishing == false {
                closeFile()
                state.unlock()
                return
            }
            let retries = pending.compactMap { sequence, entry in entry.retry.map { (sequence, $0) } }
            state.unlock()
            for (sequence, retry) in retries.sorted(by: { $0.0 < $1.0 }) {
                do {
                    delivered(sequence, directories: try retry())
                } catch {
                    logger.error("journal: delivery failed again, retrying", metadata: ["sequence": "\(sequence)", "error": "\(error)"])
                    break
                }
            }
            checkpoint()
            if finishing != nil {
                state.lock()
                closeFile()
                state.unlock()
                return
            }
        }
    }

    /// The checkpointer's last act; `state` is held.
    private func closeFile() {
        fileClosed = true
        Glibc.close(fd)
        state.broadcast()
    }

    /// Covers the delivered prefix of records with a checkpoint, and frees their space.
    private func checkpoint() {
        state.lock()
        var last = checkpointed
        var end = head
        var directories: Set<String> = []
        while let entry = pending[last + 1], let delivered = entry.directories {
            last += 1
            end = entry.end
            directories.formUnion(delivered)
        }
        // A journal closed on purpose still records what was delivered; a broken one writes nothing more.
        let canWrite = broken == nil || closed == true
        state.unlock()
        guard last > checkpointed, canWrite else { return }
        do {
            // POWERLOSS_MUTANT_*: see MaildirWriter.commit; scripts/powerloss/mutant-check.sh only.
            #if !POWERLOSS_MUTANT_SKIP_CHECKPOINT_FSYNC
            for directory in directories.sorted() { try MaildirWriter.syncDirectory(directory) }
            #endif
            let slot = JournalFormat.encode(JournalFormat.Checkpoint(epoch: epoch, nextSequence: last + 1, offset: offset(of: end),
                                                                     fileSize: fileSize))
            try write(slot, at: UInt64(JournalFormat.slotOffsets[nextSlot]))
            guard fdatasync(fd) == 0 else { throw MaildirError(path: path, operation: "fdatasync", errno: errno) }
        } catch {
            // Nothing is lost: the records stay and are replayed at the next start. Try again next round.
            logger.error("journal: checkpoint failed", metadata: ["error": "\(error)"])
            return
        }
        state.lock()
        nextSlot = 1 - nextSlot
        for sequence in (checkpointed + 1)...last { pending[sequence] = nil }
        checkpointed = last
        head = end
        state.broadcast()
        state.unlock()
    }

    // MARK: File access

    private func breakJournal(_ error: MaildirError) {
        guard broken == nil else { return }
        broken = error
        logger.critical("journal: write or flush failed; later messages are committed the direct way",
                        metadata: ["journal": "\(path)", "error": "\(error)"])
    }

    private func offset(of position: UInt64) -> UInt64 { UInt64(JournalFormat.headSize) + position % capacity }

    private func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try Self.writeAll(fd, $0, at: offset, path: path) }
    }

    /// Copies `length` bytes from the start of `source` into the journal at `offset`: in the kernel where it
    /// can (`copy_file_range`), through a buffer otherwise (another file system, an old kernel).
    private func copy(from source: Int32, length: UInt64, to offset: UInt64) throws {
        var inOffset: Int64 = 0
        var outOffset = Int64(offset)
        var left = Int(length)
        while left > 0 {
            let copied = inetinfo_copy_file_range(source, &inOffset, fd, &outOffset, left)
            if copied > 0 {
                left -= copied
                continue
            }
            if copied < 0, errno == EINTR { continue }
            if copied < 0, ![EXDEV, ENOSYS, EINVAL, EOPNOTSUPP].contains(errno) {
                throw MaildirError(path: path, operation: "copy_file_range", errno: errno)
            }
            break
        }
        guard left > 0 else { return }
        var buffer = [UInt8](repeating: 0, count: min(left, 1 << 20))
        while left > 0 {
            let count = try buffer.withUnsafeMutableBytes { raw in
                try Self.readSome(source, raw, count: min(left, raw.count), at: UInt64(inOffset), path: path)
            }
            guard count > 0 else { throw MaildirError(path: path, operation: "read spool", errno: EIO) }
            try buffer.withUnsafeBytes { try Self.writeAll(fd, UnsafeRawBufferPointer(rebasing: $0.prefix(count)), at: UInt64(outOffset), path: path) }
            inOffset += Int64(count)
            outOffset += Int64(count)
            left -= count
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws {
        var done = 0
        while done < bytes.count {
            let result = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if result < 0 {
                if errno == EINTR { continue }
                throw MaildirError(path: path, operation: "write", errno: errno)
            }
            done += result
        }
    }

    static func readSome(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: UInt64, path: String) throws -> Int {
        while true {
            let result = pread(fd, buffer.baseAddress!, count, off_t(offset))
            if result >= 0 { return result }
            if errno != EINTR { throw MaildirError(path: path, operation: "read", errno: errno) }
        }
    }
}
