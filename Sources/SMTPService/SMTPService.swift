import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Supervision

/// The `smtp` hosted service: an ESMTP receiver with CHUNKING that delivers durably to Maildir.
public struct SMTPService: HostedService {
    public let name = "smtp"
    let settings: SMTPSettings
    let writer: MaildirWriter
    /// Direct commits (fsync, link, directory fsync) and, with the journal, the deliveries behind the 250
    /// run here, many at once: concurrent sessions' fsyncs are in flight together (a journaling file system
    /// merges them into one commit; without a journal the device still queues them together) instead of
    /// waiting behind each other on one thread, and concurrent commits into one Maildir share their
    /// directory fsyncs (``DirectorySyncer``).
    let commitPool: NIOThreadPool
    /// Deliveries behind the journal's 250s, on `commitPool`.
    let deliveries: DeliveryQueue
    let sessions: ConnectionLimiter
    let names: MaildirNames
    let threads: Int
    /// In a worker process, the MS02-012 replay crashes the process for real, as the 2002 service did;
    /// in the host's own process it fails the instance (a crash there would take every service down).
    let simulatedFailureCrashes: Bool
    /// The spool is cleaned once per host run, by the first instance that gets that far (an instance that
    /// fails before, on a missing state directory say, leaves it to the next).
    let spoolRecovered = NIOLockedValueBox(false)
    /// This process's journal (`smtp.commit = journal`), claimed by the first instance that runs and kept
    /// by the next ones: a restarted instance goes on with the records of the one before.
    let journal = NIOLockedValueBox<MailJournal?>(nil)

    public init(settings: SMTPSettings, threads: Int = 1, simulatedFailureCrashes: Bool = false) {
        self.settings = settings
        self.threads = threads
        self.simulatedFailureCrashes = simulatedFailureCrashes
        writer = MaildirWriter(root: settings.mailRoot, hostName: settings.hostName)
        commitPool = NIOThreadPool(numberOfThreads: 32)
        commitPool.start()
        deliveries = DeliveryQueue(pool: commitPool)
        sessions = ConnectionLimiter(limit: settings.maxSessions, perClientLimit: settings.maxSessionsPerClient)
        names = MaildirNames(hostName: writer.hostName)
    }

    public func run(_ context: InstanceContext) async throws {
        if settings.delivery == .maildir, settings.commit == .journal, journal.withLockedValue({ $0 }) == nil {
            // Replays first what dead processes acknowledged and did not deliver (their spool files are
            // removed just below).
            do {
                let claimed = try JournalClaim.claim(writer: writer, size: UInt64(settings.journalSize), logger: context.logger)
                // How deliveries behind the 250 become durable (docs/smtp.md): one syncfs per checkpoint, or
                // an fsync per file and `new/` folder where syncfs cannot be trusted.
                context.logger.info("journal claimed", metadata: [
                    "journal": "\(claimed.path)", "checkpoint": "\(claimed.syncsFileSystem ? "syncfs" : "fsync")",
                ])
                journal.withLockedValue { $0 = claimed }
            } catch let error as MaildirError where error.isOutOfSpace {
                // Mail is still taken, durably, the direct way; the next instance tries again (and replays
                // then whatever a dead process's journal holds: it stays on the disk meanwhile).
                context.logger.critical("no space for the journal: committing the direct way until an instance can claim one",
                                        metadata: ["error": "\(error)", "smtp.journal-size": "\(settings.journalSize)"])
            }
        }
        if settings.delivery == .maildir, !spoolRecovered.withLockedValue({ $0 }) {
            // Left by a host that was killed mid-delivery: never acknowledged, or (with the journal)
            // delivered again just above from its record; safe to remove.
            let (removed, kept) = try writer.recoverSpool()
            if removed > 0 { context.logger.notice("removed unfinished deliveries from the spool", metadata: ["files": "\(removed)"]) }
            if kept > 0 {
                context.logger.warning("kept spool files that a Maildir also names (a power cut between link and unlink)",
                                       metadata: ["files": "\(kept)", "spool": "\(writer.spoolDirectory)"])
            }
            spoolRecovered.withLockedValue { $0 = true }
        }
        var options = settings.sessionOptions
        if settings.recipients == .existing {
            let writer = self.writer
            options.mailboxExists = { writer.mailboxExists($0) }
        }
        let environment = SMTPHandler.Environment(
            options: options, delivery: settings.delivery, writer: writer, journal: journal.withLockedValue { $0 }, commitPool: commitPool,
            deliveries: deliveries,
            sessions: sessions, names: names, logger: context.logger, metrics: SMTPMetrics(factory: context.metrics),
            fail: { [simulatedFailureCrashes] reason in
                if simulatedFailureCrashes { fatalError("MS02-012 replay: \(reason)") }
                context.fail(InstanceFailure(reason))
            })
        let idle = TimeAmount.seconds(Int64(settings.idleTimeoutSeconds))
        // RFC 5321 §3.1: a server that refuses a client answers the connection with 554 and closes it.
        let refusal = "554 5.7.1 \(settings.hostName) Access denied: this address is quarantined after its input crashed a service\r\n"
        try await ServerInstance.run(context, threads: threads, sendTimeout: .seconds(Int64(settings.sendTimeoutSeconds)),
                                     refusal: refusal) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idle))
                try channel.pipeline.syncOperations.addHandler(SMTPHandler(environment: environment))
            }
        }
        // A graceful stop (a failure throws past this and leaves the journal to the next instance): every
        // session has ended; a commit still queued by one that disconnected is refused by the closing
        // journal and goes the direct way. The journal is closed clean, and the next instance claims one again.
        if let open = journal.withLockedValue({ $0 }), (try? await commitPool.runIfActive({ open.finish(within: 3) })) != nil {
            journal.withLockedValue { $0 = nil }
        }
    }
}

/// Unique Maildir file names: `<seconds>.M<microseconds>P<pid>Q<counter>.<host>` (the Maildir convention).
final class MaildirNames: Sendable {
    let hostName: String
    // Guards the per-process delivery counter.
    private let counter = NIOLockedValueBox(0)
    /// A process never changes its pid (workers are exec'd, never forked from a host): one system call
    /// per process, not per message.
    private let pid = getpid()

    init(hostName: String) { self.hostName = hostName }

    /// The queue id shown to the client and in the log, and the file name.
    func next() -> (id: String, fileName: String) {
        let sequence = counter.withLockedValue { value -> Int in
            value += 1
            return value
        }
        var now = timeval()
        gettimeofday(&now, nil)
        let id = "M\(now.tv_usec)P\(pid)Q\(sequence)"
        return (id, "\(now.tv_sec).\(id).\(hostName)")
    }
}
