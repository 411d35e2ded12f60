import Foundation
import NIOConcurrencyHelpers
import Testing
@testable import SMTPService

/// Group commit of directory fsyncs: each caller must return only after an fsync that *began after its
/// call* has finished (a link made before the call is then durable), and concurrent callers share fsyncs.
@Suite struct DirectorySyncerTests {
    /// What the fake fsync and the callers saw, in one order.
    final class Ledger: Sendable {
        // Guards the clock and the fsync records; every thread of the test writes here.
        let state = NIOLockedValueBox((clock: 0, fsyncs: [(began: Int, ended: Int)]()))

        func tick() -> Int { state.withLockedValue { $0.clock += 1; return $0.clock } }
    }

    @Test func everyCallerWaitsForAnFsyncThatBeganAfterItAndCallersShareThem() throws {
        let ledger = Ledger()
        let syncer = DirectorySyncer { _ in
            let began = ledger.tick()
            usleep(500)
            let ended = ledger.tick()
            ledger.state.withLockedValue { $0.fsyncs.append((began, ended)) }
        }
        let threads = 16, callsPerThread = 40
        let violations = NIOLockedValueBox([String]())
        // Threads of their own: concurrentPerform would run only as many callers as there are cores.
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<threads {
            Thread {
                defer { done.signal() }
                for _ in 0..<callsPerThread {
                    let called = ledger.tick()
                    do { try syncer.sync("/maildir/new") } catch { violations.withLockedValue { $0.append("threw \(error)") } }
                    let returned = ledger.tick()
                    let covered = ledger.state.withLockedValue { state in
                        state.fsyncs.contains { $0.began > called && $0.ended < returned }
                    }
                    if !covered {
                        violations.withLockedValue { $0.append("call at \(called) returned at \(returned) without an fsync between") }
                    }
                }
            }.start()
        }
        for _ in 0..<threads { done.wait() }
        #expect(violations.withLockedValue { $0 }.isEmpty)
        let fsyncs = ledger.state.withLockedValue { $0.fsyncs.count }
        // 640 calls; with 16 callers at a time, far fewer fsyncs (each serves every caller waiting on it).
        #expect(fsyncs < threads * callsPerThread / 2, "\(fsyncs) fsyncs for \(threads * callsPerThread) calls")
        #expect(fsyncs > 0)
    }

    @Test func aFailedFsyncFailsItsCallersAndTheNextOneIsTriedAgain() throws {
        let attempts = NIOLockedValueBox(0)
        let syncer = DirectorySyncer { path in
            let attempt = attempts.withLockedValue { $0 += 1; return $0 }
            if attempt == 1 { throw MaildirError(path: path, operation: "fsync", errno: EIO) }
        }
        #expect(throws: MaildirError.self) { try syncer.sync("/maildir/new") }
        try syncer.sync("/maildir/new")
        #expect(attempts.withLockedValue { $0 } == 2)
    }

    /// The table holds directories being synced, not every Maildir ever written to.
    @Test func theTableForgetsDirectoriesNobodyWaitsFor() throws {
        let syncer = DirectorySyncer { _ in }
        for index in 0..<1_000 { try syncer.sync("/maildir/\(index)/new") }
        #expect(syncer.tracked == 0)
    }
}
