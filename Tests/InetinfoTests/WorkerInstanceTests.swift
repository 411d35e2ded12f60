import Foundation
@testable import InetinfoHost
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Supervision
import Testing

/// The host's side of the control protocol with one worker, driven message by message.
@Suite struct WorkerInstanceTests {
    /// A worker stand-in that a protocol violation may kill: a child of the test, never the test itself.
    private static func disposableChild() throws -> Process {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/sleep")
        child.arguments = ["30"]
        try child.run()
        return child
    }

    private static func instance(pid: Int32) -> (WorkerInstance, NIOLockedValueBox<[InstanceEvent]>) {
        let channel = EmbeddedChannel()
        let worker = WorkerInstance(pid: pid, channel: channel.eventLoop.makeSucceededFuture(channel),
                                    logger: Logger(label: "worker-instance-test"))
        let events = NIOLockedValueBox<[InstanceEvent]>([])
        worker.attach { event in events.withLockedValue { $0.append(event) } }
        return (worker, events)
    }

    /// CI once saw a trapping worker named "broke the control protocol": its last pong was read after
    /// the crash report began and had dropped the waiting pings.
    @Test func aPongReadAfterTheCrashReportBeganIsLateNotAViolation() throws {
        let child = try Self.disposableChild()
        defer { kill(child.processIdentifier, SIGKILL); child.waitUntilExit() }
        let (worker, events) = Self.instance(pid: child.processIdentifier)
        let answered = NIOLockedValueBox(0)
        worker.ping { answered.withLockedValue { $0 += 1 } }
        worker.crashStarted()
        #expect(answered.withLockedValue { $0 } == 1, "a crashing worker's ping is answered for it")
        worker.received(.pong(1))
        #expect(answered.withLockedValue { $0 } == 1)
        #expect(events.withLockedValue { $0 }.isEmpty)
        #expect(child.isRunning, "a late pong kills nothing")
        worker.ended(.signaled(signal: SIGKILL))
    }

    @Test func aPongReadAfterTheEndIsLateNotAViolation() throws {
        let child = try Self.disposableChild()
        defer { kill(child.processIdentifier, SIGKILL); child.waitUntilExit() }
        let (worker, events) = Self.instance(pid: child.processIdentifier)
        worker.ping {}
        worker.ended(.signaled(signal: SIGILL))
        worker.received(.pong(1))
        #expect(events.withLockedValue { $0 }.isEmpty)
    }

    @Test(arguments: [[1, 1], [2]]) func aPongToNoWaitingPingIsAViolationThatEndsTheWorker(pongs: [Int]) throws {
        let child = try Self.disposableChild()
        defer {
            if child.isRunning { kill(child.processIdentifier, SIGKILL) }
            child.waitUntilExit()
        }
        let (worker, events) = Self.instance(pid: child.processIdentifier)
        defer { worker.ended(.signaled(signal: SIGKILL)) }
        let answered = NIOLockedValueBox(0)
        worker.ping { answered.withLockedValue { $0 += 1 } }
        // [1, 1]: a second answer to the one ping; [2]: an answer to a ping never sent.
        for id in pongs { worker.received(.pong(id)) }
        #expect(answered.withLockedValue { $0 } == (pongs.first == 1 ? 1 : 0))
        #expect(events.withLockedValue { $0 } == [.failed(reason: "worker broke the control protocol: an answer to no waiting ping")])
        child.waitUntilExit()
        #expect(child.terminationReason == .uncaughtSignal && child.terminationStatus == SIGKILL)
    }
}
