import CJournal
import Foundation
import Glibc
import Logging

/// The SMTP service's write-ahead journal (`smtp.commit = journal`): a message is acknowledged once its
/// record is in a preallocated file and an `fdatasync` that began after the record was written has
/// returned; its delivery into the Maildirs follows, and a checkpoint later frees its space.
///
/// Contract:
/// - ``commit(_:contentFile:contentLength:contentCRC:completion:)`` queues a record; the journal's writer
///   thread appends the queued records in order, so the records written always form a prefix of the
///   sequence, then runs one `fdatasync` for all of them (group commit: the commits arriving meanwhile
///   share the next) and only then completes each with its sequence number. No thread waits per commit.
/// - A failed write or flush breaks the journal: the commits whose flush failed get
///   ``JournalError/notDurable(_:)`` (451: nothing of theirs is acknowledged); the record whose write
///   failed, and every later one, get ``JournalError/broken(_:)`` (not acknowledged through the journal:
///   the caller commits them the direct way). After a failed `fdatasync` the kernel may have dropped the
///   pages, so a later successful one proves nothing. The next start replays what is on the disk.
/// - Deliveries are reported with ``delivered(_:directories:)``; the checkpointer thread makes the
///   delivered prefix of records durable in the Maildirs, then writes a checkpoint slot and flushes it.
///   Only then is their space reused. On a local file system that honours `syncfs(2)`
///   (``syncsFileSystem``) that is one `syncfs` for every file and folder delivered since the last
///   checkpoint (the deliveries fsync nothing); elsewhere (FUSE, network file systems: `syncfs` may not
///   reach the storage) each delivery fsyncs its file and the checkpoint fsyncs the `new/` folders. A
///   failed `syncfs` stops checkpoints and breaks the journal for this process (its error is reported
///   once: a later `syncfs` would prove nothing); the next start replays and fsyncs what is left.
/// - A failed delivery is retried by the checkpointer until it succeeds; until then the journal fills
///   and, past ``spaceWait``, commits get ``JournalError/full`` (452).
/// - The file is one process's alone: it holds an exclusive `flock` for as long as it is open, and a
///   journal whose owner died is replayed by the next instance that claims files (``MailJournalSet``).
final class MailJournal: @unchecked Sendable {
    enum JournalError: Error, CustomStringConvertible {
        /// No space came free within the wait: the checkpoint is behind (deliveries failing).
        case full
        /// The record was not written (its own write failed, or an earlier write or flush did, or the
        /// journal is closing): nothing more is acknowledged through this journal; the message may go the
        /// direct way.
        case broken(MaildirError)
        /// The record was written but the flush that was to cover it failed: nothing is acknowledged.
        case notDurable(MaildirError)
        /// The record would take more than a quarter of the ring, or its recipient list more than the replay
        /// reads (``JournalFormat/maxMetadata``): the message goes the direct way.
        case tooLarge

        var description: String {
            switch self {
            case .full: "the journal is full"
            case .broken(let error): "the journal is unusable since \(error)"
            case .notDurable(let error): "the journal's flush failed: \(error)"
            case .tooLarge: "the message is too large for the journal"
            }
        }
    }

    /// A delivery that the checkpointer runs again (it failed before): returns the `new/` folders it linked into.
    typealias Delivery = @Sendable () throws -> [String]
    /// Learns, on the writer thread, that a record is durable (its sequence number) or why it is not.
    typealias Completion = @Sendable (Result<UInt64, JournalError>) -> Void

    /// A commit waiting for the writer thread.
    private struct Request {
        var metadata: JournalFormat.Metadata
        var contentFile: Int32
        var contentLength: UInt64
        var contentCRC: UInt32
        /// Space is waited for until then, from the moment the commit was queued.
        var deadline: Date
        var completion: Completion
    }

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

    // Guards `queue`, `stopWriter` and `writerStopped`; the writer thread waits on it for work, ``close(checkpointing:)``
    // for the writer to stop. Never taken inside `state`.
    private let requests = NSCondition()
    private var queue: [Request] = []
    /// Set by ``close(checkpointing:)``: the writer finishes its batch, fails what is queued, and stops.
    private var stopWriter = false
    private var writerStopped = false

    // Guards everything below. The writer thread waits on it for space, the checkpointer for work.
    private let state = NSCondition()
    private var nextSequence: UInt64
    /// Logical positions (they only grow; the file offset is `head size + position % capacity`).
    private var head: UInt64
    private var tail: UInt64
    private var broken: MaildirError?
    private var pending: [UInt64: Pending] = [:]
    /// The last record a checkpoint covers.
    private var checkpointed: UInt64
    private var nextSlot = 1
    private var checkpointWanted = false
    /// Set by ``close(checkpointing:)`` before it waits for the writer: a commit waiting for space gives up.
    private var closing = false
    /// Set by ``close(checkpointing:)`` (to its argument); the checkpointer closes the file on its way out.
    private var closed: Bool?
    /// `fdatasync`, replaced in tests by one that fails.
    private let flush: @Sendable (Int32) -> Int32
    /// Whether a checkpoint makes deliveries durable with one `syncfs` of the journal's file system
    /// instead of an fsync per file and folder (decided once, from the file system's type).
    let syncsFileSystem: Bool
    /// `syncfs`, replaced in tests by one that fails.
    private let syncFileSystem: @Sendable (Int32) -> Int32
    /// Set when a `syncfs` failed: no checkpoint is written again by this process.
    private var checkpointsStopped = false

    /// Takes over an opened, locked, replayed journal file: the next record goes at `checkpoint`.
    init(path: String, fd: Int32, checkpoint: JournalFormat.Checkpoint, logger: Logger,
         spaceWait: TimeInterval = 5, checkpointInterval: TimeInterval = 0.1, flush: @escaping @Sendable (Int32) -> Int32 = { fdatasync($0) },
         syncFileSystem: (@Sendable (Int32) -> Int32)? = nil, mailFolders: [String] = []) {
        self.path = path
        self.flush = flush
        syncsFileSystem = syncFileSystem != nil || Self.honoursSyncFS(fd, sharedWith: mailFolders)
        self.syncFileSystem = syncFileSystem ?? { inetinfo_syncfs($0) }
        self.fd = fd
        self.logger = logger
        self.spaceWait = spaceWait
        self.checkpointInterval = checkpointInterval
        fileSize = checkpoint.fileSize
        capacity = checkpoint.fileSize - UInt64(JournalFormat.headSize)
        epoch = checkpoint.epoch
        nextSequence = checkpoint.nextSequence
        checkpointed = checkpoint.nextSequence - 1
        head = checkpoint.offset - UInt64(JournalFormat.headSize)
        tail = head
        let writer = Thread { [weak self] in self?.runWriter() }
        writer.name = "smtp-journal-writer"
        writer.start()
        let checkpointer = Thread { [weak self] in self?.runCheckpoints() }
        checkpointer.name = "smtp-journal-checkpoint"
        checkpointer.start()
    }

    /// Largest record the ring takes; a larger message is committed the direct way.
    var largestRecord: UInt64 { capacity / 4 }

    /// Why a commit is refused once ``close(checkpointing:)`` has begun.
    private var closedError: MaildirError { MaildirError(path: path, operation: "close", errno: EBADF) }

    /// Queues a message's record: the metadata, then `contentLength` bytes copied from `contentFile` (from
    /// its start, which must stay open until `completion` has run). Returns at once; `completion` runs on
    /// the writer thread once a flush covering the record has succeeded, or with why it will not be:
    /// ``JournalError/tooLarge`` and ``JournalError/broken(_:)`` (not written: the direct way may take the
    /// message), ``JournalError/full`` after ``spaceWait``, ``JournalError/notDurable(_:)``.
    func commit(_ metadata: JournalFormat.Metadata, contentFile: Int32, contentLength: UInt64, contentCRC: UInt32,
                completion: @escaping Completion) {
        let request = Request(metadata: metadata, contentFile: contentFile, contentLength: contentLength, contentCRC: contentCRC,
                              deadline: Date(timeIntervalSinceNow: spaceWait), completion: completion)
        requests.lock()
        guard !stopWriter else {
            requests.unlock()
            return completion(.failure(.broken(closedError)))
        }
        queue.append(request)
        // Only the writer waits on `requests` for work.
        if queue.count == 1 { requests.signal() }
        requests.unlock()
    }

    // MARK: The writer

    /// Takes what is queued, appends it, flushes once, completes: one flush per batch, however many
    /// commits arrived during the previous one.
    private func runWriter() {
        while true {
            requests.lock()
            while queue.isEmpty, !stopWriter { requests.wait() }
            if stopWriter {
                let left = queue
                queue = []
                writerStopped = true
                requests.broadcast()
                requests.unlock()
                for request in left { request.completion(.failure(.broken(closedError))) }
                return
            }
            let batch = queue
            queue = []
            requests.unlock()
            var written: [(sequence: UInt64, completion: Completion)] = []
            for request in batch {
                switch append(request, beforeWaiting: { flushBatch(completing: &written) }) {
                case .success(let sequence): written.append((sequence, request.completion))
                case .failure(let error): request.completion(.failure(error))
                }
            }
            flushBatch(completing: &written)
        }
    }

    /// Writes one record; if it has to wait for space, first flushes and completes what this batch wrote
    /// (their checkpoint is what frees space later, not theirs to wait for).
    private func append(_ request: Request, beforeWaiting: () -> Void) -> Result<UInt64, JournalError> {
        let sequence: UInt64
        let recordHead: [UInt8]
        var wrapAt: UInt64?
        var start: UInt64 = 0
        state.lock()
        if let broken {
            state.unlock()
            return .failure(.broken(broken))
        }
        sequence = nextSequence
        recordHead = JournalFormat.encodeRecordHead(kind: .message, epoch: epoch, sequence: sequence, metadata: request.metadata,
                                                    contentLength: request.contentLength, contentCRC: request.contentCRC)
        let (unpadded, overflow) = UInt64(recordHead.count).addingReportingOverflow(request.contentLength)
        // A record the replay would refuse (a recipient list over its metadata limit: ~860 recipients with
        // 64-octet local parts) must never be written: the replay stops at it, and every record behind it
        // would be lost with it.
        guard !overflow, unpadded <= largestRecord, recordHead.count - JournalFormat.recordHeaderSize <= JournalFormat.maxMetadata else {
            state.unlock()
            return .failure(.tooLarge)
        }
        let length = (unpadded + 7) & ~7
        var flushedBatch = false
        while true {
            if let broken {
                state.unlock()
                return .failure(.broken(broken))
            }
            if closing {
                state.unlock()
                return .failure(.broken(closedError))
            }
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
            if !flushedBatch {
                flushedBatch = true
                state.unlock()
                beforeWaiting()
                state.lock()
                continue
            }
            guard state.wait(until: request.deadline) else {
                state.unlock()
                return .failure(.full)
            }
        }
        nextSequence += 1
        pending[sequence] = Pending(end: tail)
        state.unlock()
        do {
            if let wrapAt, capacity - wrapAt % capacity >= UInt64(JournalFormat.recordHeaderSize) {
                let marker = JournalFormat.encodeRecordHead(kind: .wrap, epoch: epoch, sequence: sequence, metadata: nil,
                                                            contentLength: 0, contentCRC: 0)
                try write(marker, at: offset(of: wrapAt))
            }
            let at = offset(of: start)
            try write(recordHead, at: at)
            try copy(from: request.contentFile, length: request.contentLength, to: at + UInt64(recordHead.count))
        } catch let error as MaildirError {
            // A hole in the sequence would end every later replay there: nothing more goes in.
            state.lock()
            pending[sequence] = nil
            breakJournal(error)
            state.unlock()
            return .failure(.broken(error))
        } catch {
            preconditionFailure("journal writes throw MaildirError only: \(error)")
        }
        return .success(sequence)
    }

    /// One `fdatasync` for every record in `written`, then their completions (all succeed or all fail).
    private func flushBatch(completing written: inout [(sequence: UInt64, completion: Completion)]) {
        guard !written.isEmpty else { return }
        // POWERLOSS_MUTANT_*: see MaildirWriter.commit; scripts/powerloss/mutant-check.sh only.
        #if POWERLOSS_MUTANT_SKIP_JOURNAL_FLUSH
        let failure: MaildirError? = nil
        #else
        let failure = self.flush(fd) == 0 ? nil : MaildirError(path: path, operation: "fdatasync", errno: errno)
        #endif
        // A later record's write may have failed meanwhile (the journal is broken): these were written
        // before it and this flush began after them, so they are durable all the same, and acknowledged.
        if let failure {
            state.lock()
            breakJournal(failure)
            state.unlock()
        }
        for (sequence, completion) in written {
            completion(failure.map { .failure(.notDurable($0)) } ?? .success(sequence))
        }
        written.removeAll(keepingCapacity: true)
    }

    /// Record `sequence` is in every recipient's `new/` (its file fsynced unless ``syncsFileSystem``);
    /// `directories` are the `new/` folders still to be fsynced before a checkpoint may cover it.
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

    /// Stops the writer, then the checkpointer, after a last checkpoint of what was delivered if
    /// `checkpointing` (without, the file is left as a crash leaves it), and closes the file once both
    /// have stopped. Commits get ``JournalError/broken(_:)`` from now on (they go the direct way). A host
    /// exits without: its journal is closed by the exit. Returns when the file is closed.
    func close(checkpointing: Bool = true) {
        // The writer first: what its batch has written is flushed and answered; the rest of the batch
        // (from a record waiting for space on) and what is queued are refused.
        state.lock()
        closing = true
        state.broadcast()
        state.unlock()
        requests.lock()
        stopWriter = true
        requests.broadcast()
        while !writerStopped { requests.wait() }
        requests.unlock()
        state.lock()
        defer { state.unlock() }
        if broken == nil { broken = closedError }
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
            // Woken early when the writer needs space (or on close); otherwise once per interval.
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
        let canWrite = (broken == nil || closed == true) && !checkpointsStopped
        state.unlock()
        guard last > checkpointed, canWrite else { return }
        if syncsFileSystem {
            // Every file linked and every folder written since the last checkpoint, in one call (and
            // whatever else is dirty on the file system: a checkpoint may wait for it; a 250 never does).
            // POWERLOSS_MUTANT_*: see MaildirWriter.commit; scripts/powerloss/mutant-check.sh only.
            #if POWERLOSS_MUTANT_SKIP_SYNCFS
            let synced: Int32 = 0
            #else
            let synced = syncFileSystem(fd)
            #endif
            guard synced == 0 else {
                let error = MaildirError(path: path, operation: "syncfs", errno: errno)
                // Its records stay in the journal, for the next start to replay and fsync one by one. Logged
                // here: on the way to close, the journal is already marked broken (closing).
                state.lock()
                checkpointsStopped = true
                if broken == nil { broken = error }
                state.unlock()
                logger.critical("journal: syncfs failed; no checkpoint until the next start, which replays what is left; later messages are committed the direct way",
                                metadata: ["journal": "\(path)", "error": "\(error)"])
                return
            }
        }
        do {
            // POWERLOSS_MUTANT_*: see MaildirWriter.commit; scripts/powerloss/mutant-check.sh only.
            #if !POWERLOSS_MUTANT_SKIP_CHECKPOINT_FSYNC
            if !syncsFileSystem {
                for directory in directories.sorted() { try MaildirWriter.syncDirectory(directory) }
            }
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

    /// Whether the journal's file system is a local one whose `syncfs(2)` writes back every dirty file and
    /// folder and flushes the device, reporting every error on the way — write-back errors since Linux
    /// 5.8, the file system's own sync step (ext4's device flush, XFS's log force) since 5.17 — and
    /// `folders` (where messages are delivered) are on it too. FUSE does not pass `syncfs` on to its server
    /// (so the power-loss model, a FUSE file system, sees per-file fsyncs), nor is it known to reach the
    /// server of a network file system.
    static func honoursSyncFS(_ fd: Int32, sharedWith folders: [String]) -> Bool {
        let ext4: Int64 = 0xEF53, xfs: Int64 = 0x5846_5342, btrfs: Int64 = 0x9123_683E, tmpfs: Int64 = 0x0102_1994
        guard [ext4, xfs, btrfs, tmpfs].contains(inetinfo_file_system_type(fd)), kernelReportsSyncFSErrors() else { return false }
        var journal = stat()
        guard fstat(fd, &journal) == 0 else { return false }
        return folders.allSatisfy { folder in
            var info = stat()
            return stat(folder, &info) == 0 && info.st_dev == journal.st_dev
        }
    }

    private func breakJournal(_ error: MaildirError) {
        guard broken == nil else { return }
        broken = error
        logger.critical("journal: write or flush failed; later messages are committed the direct way",
                        metadata: ["journal": "\(path)", "error": "\(error)"])
    }

    /// Linux 5.17 or later (`uname -r`): see ``honoursSyncFS(_:sharedWith:)``.
    private static func kernelReportsSyncFSErrors() -> Bool {
        var name = utsname()
        guard uname(&name) == 0 else { return false }
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).map { Int($0) ?? 0 }
        guard numbers.count == 2 else { return false }
        return (numbers[0], numbers[1]) >= (5, 17)
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
