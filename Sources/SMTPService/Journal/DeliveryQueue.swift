import NIOConcurrencyHelpers
import NIOPosix

/// Deliveries behind the 250, run on a thread pool with one submission per burst instead of one per
/// message: the journal's writer completes a whole flushed batch at once, and waking a pool thread for
/// each of its messages cost more than the deliveries' own system calls under load (a futex wake-up and a
/// context switch each, on two cores shared with the event loops). For deliveries that do not wait on the
/// disk (a link and an unlink each, made durable by the checkpoint's `syncfs`): one thread keeps up.
/// 20 sessions × 4 KiB, interleaved A/B: ~206 → ~184 µs of CPU per message; 250 → `new/` p99 0.43 →
/// 2.6 ms (goal ≤ 100 ms).
///
/// Contract: every job added runs exactly once, in the order added, on one of `pool`'s threads — or, once
/// the pool is stopping, with `active` false, on whatever thread NIO then runs the pool's work (at once
/// on the caller's if it has stopped); the job then leaves its work to the journal's retries. At most
/// one thread drains the queue at a time; a job added while it drains is run by it, without a new
/// submission.
final class DeliveryQueue: Sendable {
    typealias Job = @Sendable (_ active: Bool) -> Void

    private struct State {
        var jobs: [Job] = []
        var draining = false
    }

    // Guards the queued jobs and whether a pool thread is draining them.
    private let state = NIOLockedValueBox(State())
    private let pool: NIOThreadPool

    init(pool: NIOThreadPool) { self.pool = pool }

    func add(_ job: @escaping Job) {
        let submit = state.withLockedValue { state -> Bool in
            state.jobs.append(job)
            guard !state.draining else { return false }
            state.draining = true
            return true
        }
        guard submit else { return }
        pool.submit { poolState in
            let active: Bool
            if case .active = poolState { active = true } else { active = false }
            self.drain(active: active)
        }
    }

    private func drain(active: Bool) {
        while true {
            let jobs = state.withLockedValue { state -> [Job] in
                let jobs = state.jobs
                state.jobs = []
                if jobs.isEmpty { state.draining = false }
                return jobs
            }
            guard !jobs.isEmpty else { return }
            for job in jobs { job(active) }
        }
    }
}
