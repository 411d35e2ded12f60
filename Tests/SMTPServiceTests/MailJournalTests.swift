import CJournal
import Foundation
import Glibc
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing
@testable import SMTPService

/// The write-ahead journal over real files: what a replay delivers after a crash, what it refuses, and
/// what a full or failing journal tells the client.
@Suite struct MailJournalTests {
    let logger = Logger(label: "journal-test")

    func withRoot(_ body: (MaildirWriter) throws -> Void) throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let writer = MaildirWriter(root: state + "/mail", hostName: "mx.test")
        _ = try writer.recoverSpool()
        try body(writer)
    }

    func spool(_ writer: MaildirWriter, _ number: Int, to recipients: [String], size: Int = 200) throws -> (MessageSpool.Finished, [UInt8]) {
        let spool = try writer.openSpool(recipients: recipients, uniqueName: "\(number).M1P0Q\(number).mx.test")
        var content = Array("Subject: \(number)\r\n\r\n".utf8)
        content += (0..<size).map { UInt8(ascii: "a") + UInt8($0 % 26) }
        spool.append(content)
        return (try spool.finish(), content)
    }

    func delivered(_ writer: MaildirWriter, _ mailbox: String) -> [String: [UInt8]] {
        let folder = "\(writer.root)/localhost/\(mailbox)/new"
        var result: [String: [UInt8]] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
            result[name] = FileManager.default.contents(atPath: "\(folder)/\(name)").map { Array($0) }
        }
        return result
    }

    /// Acknowledges (record flushed) without delivering, as a host killed right after its 250s leaves it.
    func acknowledgeOnly(_ journal: MailJournal, _ spool: MessageSpool.Finished, root: String) throws {
        let metadata = JournalFormat.Metadata(name: spool.name, mailboxes: spool.mailboxes.map { String($0.dropFirst(root.count + 1)) })
        let durable = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: UInt64.self)
        journal.commit(metadata, contentFile: spool.fd, contentLength: spool.length, contentCRC: spool.crc) { result in
            switch result {
            case .success(let sequence): durable.succeed(sequence)
            case .failure(let error): durable.fail(error)
            }
        }
        _ = try durable.futureResult.wait()
        close(spool.fd)
        unlink(spool.path)
    }

    /// The SMTP handler's commit, waited for: returns when the client would get its 250, throws what
    /// would refuse it otherwise.
    func commit(_ writer: MaildirWriter, _ spool: MessageSpool.Finished, through journal: MailJournal, pool: NIOThreadPool,
                onDeliveryError: @escaping @Sendable (any Error) -> Void = { _ in }) throws {
        let promise = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        writer.commit(spool, through: journal, deliveringWith: DeliveryQueue(pool: pool), directOn: pool, completing: promise,
                      onDeliveryError: onDeliveryError)
        try promise.futureResult.wait()
    }

    @Test func aCommitIsDeliveredBehindAndCheckpointed() throws {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        try withRoot { writer in
            let journal = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            var contents: [String: [UInt8]] = [:]
            for number in 1...20 {
                let (finished, content) = try spool(writer, number, to: ["bob@localhost", "carol@localhost"], size: 30_000)
                try commit(writer, finished, through: journal, pool: pool) { Issue.record("delivery failed: \($0)") }
                contents[finished.name] = content
            }
            // 20 × 30 kB through a 1 MiB ring: it wrapped, so checkpoints freed space on the way.
            let deadline = Date(timeIntervalSinceNow: 10)
            while journal.uncheckpointed > 0, Date() < deadline { usleep(10_000) }
            #expect(journal.uncheckpointed == 0, "every delivery checkpointed")
            #expect(delivered(writer, "bob") == contents)
            #expect(delivered(writer, "carol") == contents)
            #expect(try FileManager.default.contentsOfDirectory(atPath: writer.spoolDirectory).isEmpty)
            journal.close()
            // Nothing left to replay.
            let again = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            again.close()
            #expect(delivered(writer, "bob") == contents)
        }
    }

    /// Group commit: the commits queued while a flush runs share the next one, and every one of them is
    /// delivered. (Forty commits at once against a flush of 20 ms: a flush each would take 0.8 s.)
    @Test func commitsQueuedDuringAFlushShareTheNext() throws {
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        let flushes = NIOLockedValueBox(0)
        try withRoot { writer in
            let journal = try JournalClaim.claim(writer: writer, size: 4 << 20, logger: logger, flush: { fd in
                flushes.withLockedValue { $0 += 1 }
                usleep(20_000)
                return fdatasync(fd)
            })
            var contents: [String: [UInt8]] = [:]
            var committed: [EventLoopFuture<Void>] = []
            let loop = MultiThreadedEventLoopGroup.singleton.next()
            let deliveries = DeliveryQueue(pool: pool)
            for number in 1...40 {
                let (finished, content) = try spool(writer, number, to: ["bob@localhost"])
                contents[finished.name] = content
                let promise = loop.makePromise(of: Void.self)
                writer.commit(finished, through: journal, deliveringWith: deliveries, directOn: pool, completing: promise) {
                    Issue.record("delivery failed: \($0)")
                }
                committed.append(promise.futureResult)
            }
            for future in committed { try future.wait() }
            let count = flushes.withLockedValue { $0 }
            #expect(count >= 1 && count <= 5, "40 commits took \(count) flushes")
            let deadline = Date(timeIntervalSinceNow: 10)
            while journal.uncheckpointed > 0, Date() < deadline { usleep(10_000) }
            #expect(delivered(writer, "bob") == contents)
            journal.close()
        }
    }

    /// Acknowledged, then the host dies before any delivery: the next claim delivers every message once,
    /// byte for byte; a half-done delivery (a torn copy in `new/` of one recipient, the message already
    /// moved to `cur/` by the other's mail reader) is finished, never duplicated; a third claim changes nothing.
    @Test func replayDeliversWhatWasAcknowledgedExactlyOnce() throws {
        try withRoot { writer in
            let journal = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            var contents: [String: [UInt8]] = [:]
            for number in 1...5 {
                let (finished, content) = try spool(writer, number, to: ["bob@localhost", "carol@localhost"])
                try acknowledgeOnly(journal, finished, root: writer.root)
                contents[finished.name] = content
            }
            journal.close(checkpointing: false)
            #expect(delivered(writer, "bob").isEmpty)
            // Half-delivered before the crash: a torn copy for bob, carol's already read.
            let first = "1.M1P0Q1.mx.test"
            for mailbox in ["bob", "carol"] { try writer.mailboxes.makeDurable("\(writer.root)/localhost/\(mailbox)") }
            try Data(contents[first]!.prefix(10)).write(to: URL(fileURLWithPath: "\(writer.root)/localhost/bob/new/\(first)"))
            try Data(contents[first]!).write(to: URL(fileURLWithPath: "\(writer.root)/localhost/carol/cur/\(first):2,S"))

            let replayed = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            replayed.close()
            #expect(delivered(writer, "bob") == contents)
            var carol = contents
            carol[first] = nil
            #expect(delivered(writer, "carol") == carol, "the message carol read is not delivered again")
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(writer.root)/localhost/carol/cur") == ["\(first):2,S"])

            let third = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            third.close()
            #expect(delivered(writer, "bob") == contents)
            #expect(delivered(writer, "carol") == carol)
        }
    }

    /// A record whose recipient list the replay would refuse (metadata over 64 KiB: 900 recipients with
    /// 64-octet local parts, which `smtp.max-recipients` allows) is never written: that message goes the
    /// direct way (in `new/` before its 250), and the acknowledged records on either side of it replay.
    /// Written, it ended every replay there, and the records behind it were lost.
    @Test func aRecipientListTheReplayCannotReadGoesTheDirectWay() throws {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        try withRoot { writer in
            let journal = try JournalClaim.claim(writer: writer, size: 4 << 20, logger: logger)
            let (first, firstContent) = try spool(writer, 1, to: ["bob@localhost"])
            try acknowledgeOnly(journal, first, root: writer.root)

            let many = (0..<900).map { "\(String(repeating: "r", count: 60))\(1000 + $0)@localhost" }
            let (big, bigContent) = try spool(writer, 2, to: many + ["bob@localhost"])
            let metadata = JournalFormat.Metadata(name: big.name, mailboxes: big.mailboxes.map { String($0.dropFirst(writer.root.count + 1)) })
            #expect(JournalFormat.encode(metadata).count > JournalFormat.maxMetadata)
            let refused = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: UInt64.self)
            journal.commit(metadata, contentFile: big.fd, contentLength: big.length, contentCRC: big.crc) { result in
                switch result {
                case .success(let sequence): refused.succeed(sequence)
                case .failure(let error): refused.fail(error)
                }
            }
            #expect {
                _ = try refused.futureResult.wait()
            } throws: { error in
                if case MailJournal.JournalError.tooLarge = error { return true }
                return false
            }
            // The handler's way: committed directly, so in every `new/` by the time of the 250.
            try commit(writer, big, through: journal, pool: pool) { Issue.record("delivery failed: \($0)") }
            #expect(delivered(writer, "bob")[big.name] == bigContent)
            #expect(delivered(writer, many[899].split(separator: "@")[0].description)[big.name] == bigContent)

            let (third, thirdContent) = try spool(writer, 3, to: ["bob@localhost"])
            try acknowledgeOnly(journal, third, root: writer.root)
            // Killed before any delivery behind a 250: the replay finds the first and the third message.
            journal.close(checkpointing: false)
            let replayed = try JournalClaim.claim(writer: writer, size: 4 << 20, logger: logger)
            replayed.close()
            #expect(delivered(writer, "bob") == [first.name: firstContent, big.name: bigContent, third.name: thirdContent])
        }
    }

    /// A replay that cannot deliver (the Maildir cannot be made) keeps the journal and stops the claim; once
    /// the obstacle is gone the next claim delivers. The journal is never set aside as damaged for that.
    @Test func aReplayThatCannotDeliverKeepsTheJournalForTheNextAttempt() throws {
        try withRoot { writer in
            let journal = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            let (finished, content) = try spool(writer, 1, to: ["bob@localhost"])
            try acknowledgeOnly(journal, finished, root: writer.root)
            journal.close(checkpointing: false)
            try FileManager.default.createDirectory(atPath: "\(writer.root)/localhost", withIntermediateDirectories: true)
            let obstacle = "\(writer.root)/localhost/bob"
            _ = FileManager.default.createFile(atPath: obstacle, contents: Data("x".utf8))
            #expect(throws: MaildirError.self) { try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger) }
            #expect(try FileManager.default.contentsOfDirectory(atPath: writer.journalDirectory) == ["journal.0"])
            try FileManager.default.removeItem(atPath: obstacle)
            let replayed = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            replayed.close()
            #expect(delivered(writer, "bob") == [finished.name: content])
        }
    }

    /// A record torn by a power cut (its content not all on the disk) was never acknowledged: the replay
    /// stops before it, and delivers the ones before.
    @Test func aTornTailRecordIsDropped() throws {
        try withRoot { writer in
            let journal = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            var names: [String] = []
            for number in 1...3 {
                let (finished, _) = try spool(writer, number, to: ["bob@localhost"], size: 1000)
                try acknowledgeOnly(journal, finished, root: writer.root)
                names.append(finished.name)
            }
            journal.close(checkpointing: false)
            // The last record's last content bytes as zeros, as if they had not reached the disk.
            let path = "\(writer.journalDirectory)/journal.0"
            let fd = open(path, O_RDWR)
            #expect(fd >= 0)
            var offset = JournalFormat.headSize
            for _ in 0..<2 {
                var header = [UInt8](repeating: 0, count: JournalFormat.recordHeaderSize)
                _ = pread(fd, &header, header.count, off_t(offset))
                offset += Int(JournalFormat.decodeRecordHeader(header[...])!.storedLength!)
            }
            var header = [UInt8](repeating: 0, count: JournalFormat.recordHeaderSize)
            _ = pread(fd, &header, header.count, off_t(offset))
            let last = JournalFormat.decodeRecordHeader(header[...])!
            let zeros = [UInt8](repeating: 0, count: 100)
            _ = pwrite(fd, zeros, zeros.count, off_t(offset + JournalFormat.recordHeaderSize + last.metadataLength + Int(last.contentLength) - 100))
            close(fd)

            let replayed = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            replayed.close()
            #expect(Set(delivered(writer, "bob").keys) == Set(names.prefix(2)))
        }
    }

    /// A flush that fails acknowledges nothing: the commit waiting on it throws, and so does every later
    /// one through the broken journal (those go the direct way).
    @Test func aFailedFlushAcknowledgesNothing() throws {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        try withRoot { writer in
            let journal = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger, flush: { _ in
                errno = EIO
                return -1
            })
            let (finished, _) = try spool(writer, 1, to: ["bob@localhost"])
            #expect(throws: MailJournal.JournalError.self) {
                try commit(writer, finished, through: journal, pool: pool)
            }
            usleep(200_000)
            #expect(delivered(writer, "bob").isEmpty, "nothing delivered for a failed flush")
            #expect(try FileManager.default.contentsOfDirectory(atPath: writer.spoolDirectory).isEmpty)
            // Later commits take the direct way: durable before they return.
            let (second, content) = try spool(writer, 2, to: ["bob@localhost"])
            try commit(writer, second, through: journal, pool: pool)
            #expect(delivered(writer, "bob") == [second.name: content])
            journal.close(checkpointing: false)
        }
    }

    /// A journal claimed as the service claims it (before any message made the spool folder) on a local
    /// file system checkpoints with `syncfs`; elsewhere with per-file fsyncs.
    @Test func aJournalOnALocalFileSystemCheckpointsWithSyncFS() throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let writer = MaildirWriter(root: state + "/mail", hostName: "mx.test")
        let journal = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
        defer { journal.close() }
        let fd = open(writer.root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer { close(fd) }
        let local: [Int64] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994]
        #expect(journal.syncsFileSystem == local.contains(inetinfo_file_system_type(fd)))
        // And the decision itself: tmpfs (on this kernel) yes, a mail root on another device no.
        let shm = open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if shm >= 0, inetinfo_file_system_type(shm) == 0x0102_1994 {
            defer { close(shm) }
            #expect(MailJournal.honoursSyncFS(shm, sharedWith: ["/dev/shm"]))
            #expect(!MailJournal.honoursSyncFS(shm, sharedWith: [writer.root]))
        }
    }

    /// Where the checkpoint makes deliveries durable with one `syncfs`, a failed one stops checkpoints: the
    /// records stay, later messages go the direct way, a clean close writes no checkpoint, and the next
    /// start delivers again what the failed write-back may have lost.
    @Test func aFailedSyncFSKeepsTheRecordsForTheNextStart() throws {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        let syncs = NIOLockedValueBox(0)
        try withRoot { writer in
            // As the kernel reports a write-back error: once; a second syncfs would succeed and prove nothing.
            let journal = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger, syncFileSystem: { _ in
                let first = syncs.withLockedValue { count in
                    count += 1
                    return count == 1
                }
                if first { errno = EIO }
                return first ? -1 : 0
            })
            #expect(journal.syncsFileSystem)
            var contents: [String: [UInt8]] = [:]
            for number in 1...5 {
                let (finished, content) = try spool(writer, number, to: ["bob@localhost"])
                try commit(writer, finished, through: journal, pool: pool) { Issue.record("delivery failed: \($0)") }
                contents[finished.name] = content
            }
            let deadline = Date(timeIntervalSinceNow: 10)
            while syncs.withLockedValue({ $0 }) == 0 || delivered(writer, "bob").count < 5, Date() < deadline { usleep(10_000) }
            usleep(300_000)
            #expect(syncs.withLockedValue { $0 } == 1, "no syncfs after the failed one")
            #expect(journal.uncheckpointed == 5, "nothing checkpointed past a failed syncfs")
            // The journal is broken: the next message is committed the direct way, in new/ before the 250.
            let (direct, directContent) = try spool(writer, 6, to: ["bob@localhost"])
            try commit(writer, direct, through: journal, pool: pool)
            contents[direct.name] = directContent
            #expect(delivered(writer, "bob") == contents)
            journal.close()
            #expect(syncs.withLockedValue { $0 } == 1, "no checkpoint attempted at close")
            // What the failed write-back lost: the next start writes it again from the journal.
            let lost = contents.keys.sorted()[0]
            #expect(unlink("\(writer.root)/localhost/bob/new/\(lost)") == 0)
            let replayed = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            replayed.close()
            #expect(delivered(writer, "bob") == contents)
        }
    }

    /// Deliveries that keep failing hold the checkpoint back: the ring fills and commits get `full` (452)
    /// after the wait; once the obstacle is gone the retries deliver everything and commits go through.
    @Test func aFullJournalRefusesThenRecovers() throws {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        try withRoot { writer in
            let journal = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger, spaceWait: 0.3)
            // bob's Maildir cannot be made: a file where its folder goes.
            try FileManager.default.createDirectory(atPath: "\(writer.root)/localhost", withIntermediateDirectories: true)
            let obstacle = "\(writer.root)/localhost/bob"
            _ = FileManager.default.createFile(atPath: obstacle, contents: Data("x".utf8))
            var accepted: [String: [UInt8]] = [:]
            var refused = false
            for number in 1...40 {
                let (finished, content) = try spool(writer, number, to: ["bob@localhost"], size: 100_000)
                do {
                    try commit(writer, finished, through: journal, pool: pool)
                    accepted[finished.name] = content
                } catch MailJournal.JournalError.full {
                    refused = true
                    break
                }
            }
            #expect(refused, "the journal filled up")
            #expect(accepted.count >= 8 && accepted.count < 11, "about 1 MiB of records were taken (\(accepted.count))")
            try FileManager.default.removeItem(atPath: obstacle)
            let deadline = Date(timeIntervalSinceNow: 10)
            while journal.uncheckpointed > 0, Date() < deadline { usleep(20_000) }
            #expect(delivered(writer, "bob") == accepted, "every acknowledged message delivered once the Maildir can be made")
            let (finished, content) = try spool(writer, 99, to: ["bob@localhost"], size: 100_000)
            try commit(writer, finished, through: journal, pool: pool)
            accepted[finished.name] = content
            while journal.uncheckpointed > 0, Date() < deadline { usleep(20_000) }
            #expect(delivered(writer, "bob") == accepted)
            journal.close()
        }
    }

    /// Two processes running the service at once (a worker draining beside its successor) get a journal
    /// each; the journal of one that died is replayed by the next claim, and the extra file removed.
    @Test func aSecondProcessGetsItsOwnJournalAndOrphansAreReplayed() throws {
        try withRoot { writer in
            let first = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            let second = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            #expect(first.path != second.path, "a journal is one owner's")
            let (finished, content) = try spool(writer, 1, to: ["bob@localhost"])
            try acknowledgeOnly(second, finished, root: writer.root)
            second.close(checkpointing: false)
            // The owner of the second is gone: the next claim replays it, and removes the extra file.
            let third = try JournalClaim.claim(writer: writer, size: 1 << 20, logger: logger)
            #expect(delivered(writer, "bob") == [finished.name: content])
            #expect(try FileManager.default.contentsOfDirectory(atPath: writer.journalDirectory).sorted() == ["journal.0", "journal.1"].filter {
                [first.path, third.path].map { ($0 as NSString).lastPathComponent }.contains($0)
            })
            first.close()
            third.close()
        }
    }

    @Test func formatRejectsUnsafePathsAndRoundTrips() {
        let metadata = JournalFormat.Metadata(name: "1.M1P2Q3.mx.test", mailboxes: ["localhost/bob", "example.org/carol"])
        #expect(JournalFormat.decodeMetadata(JournalFormat.encode(metadata)[...]) == metadata)
        for unsafe in [["../etc"], ["localhost/.."], ["/etc/passwd"], ["localhost/bob/new"], ["localhost"], ["localhost/"]] {
            #expect(JournalFormat.decodeMetadata(JournalFormat.encode(JournalFormat.Metadata(name: "x", mailboxes: unsafe))[...]) == nil)
        }
        #expect(JournalFormat.decodeMetadata(JournalFormat.encode(JournalFormat.Metadata(name: "..", mailboxes: ["a/b"]))[...]) == nil)
        // RFC 3720 §B.4's check value.
        #expect(JournalFormat.crc(Array("123456789".utf8)) == 0xE306_9283)
        let checkpoint = JournalFormat.Checkpoint(epoch: 3, nextSequence: 9, offset: 8192, fileSize: 1 << 20)
        var head = [UInt8](repeating: 0, count: JournalFormat.headSize)
        head.replaceSubrange(512..<(512 + JournalFormat.slotSize), with: JournalFormat.encode(checkpoint))
        #expect(JournalFormat.latestCheckpoint(in: head) == checkpoint)
        head[520] ^= 1
        #expect(JournalFormat.latestCheckpoint(in: head) == nil, "a damaged slot is not used")
        // Well-formed slots whose sequence numbers would wrap the journal's arithmetic.
        for sequence: UInt64 in [0, .max] {
            let slot = JournalFormat.encode(JournalFormat.Checkpoint(epoch: 1, nextSequence: sequence, offset: 4096, fileSize: 1 << 20))
            #expect(JournalFormat.decodeCheckpoint(slot[...]) == nil)
        }
    }
}
