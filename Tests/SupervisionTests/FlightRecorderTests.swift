import Foundation
import Testing
@testable import Supervision

/// The flight recorder's file, written as the instance writes it and read back as the host reads it
/// after a crash: a real file, mapped as in production.
@Suite struct FlightRecorderTests {
    let directory: String

    init() throws {
        directory = NSTemporaryDirectory() + "flight-\(UUID().uuidString)"
        try FlightRecorderDirectory(path: directory).create()
    }

    func recorder(slots: Int = 4) throws -> FlightRecorder {
        try FlightRecorder(path: FlightRecorderDirectory(path: directory).file(service: "smtp", instance: 7), service: "smtp",
                           instance: 7, pid: 1234, hostPid: 1200, slotCount: slots)
    }

    func read(_ recorder: FlightRecorder) throws -> FlightRecording {
        try #require(FlightRecording.read(path: recorder.path))
    }

    @Test func aConnectionsInputAndCountersAreReadBackFromTheFile() throws {
        let recorder = try recorder()
        let slot = try #require(recorder.claim(peer: "127.0.0.2:40000"))
        Array("HELO x\r\n".utf8).withUnsafeBytes { slot.recordInput($0) }
        Array("BDAT 4\r\nb00m".utf8).withUnsafeBytes { slot.recordInput($0) }
        slot.recordOutput(byteCount: 105)
        slot.setProcessing(true)

        let recording = try read(recorder)
        #expect(recording.service == "smtp" && recording.instance == 7 && recording.pid == 1234 && recording.hostPid == 1200)
        let connection = try #require(recording.connections.first)
        #expect(recording.connections.count == 1)
        #expect(connection.peer == "127.0.0.2:40000")
        #expect(connection.processing)
        #expect(connection.bytesIn == 20 && connection.bytesOut == 105)
        #expect(connection.lastInput == Array("HELO x\r\nBDAT 4\r\nb00m".utf8))
        #expect(connection.lastInputAt != nil)
    }

    @Test func theRingKeepsTheLastFourKiBInOrderAcrossWraps() throws {
        let recorder = try recorder()
        let slot = try #require(recorder.claim(peer: "[::1]:1"))
        var sent: [UInt8] = []
        // Chunks of sizes that wrap the ring at every offset, and one larger than the ring.
        for (index, size) in [1000, 3000, 97, 5000, 4095, 1, 4096, 333].enumerated() {
            let chunk = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
            chunk.withUnsafeBytes { slot.recordInput($0) }
            sent += chunk
        }
        let connection = try #require(try read(recorder).connections.first)
        #expect(connection.bytesIn == UInt64(sent.count))
        #expect(connection.lastInput == Array(sent.suffix(FlightRecorder.inputBytes)))
    }

    @Test func releasedSlotsAreNotReadAndAreReusedAndAFullRecorderOverflows() throws {
        let recorder = try recorder(slots: 2)
        let first = try #require(recorder.claim(peer: "127.0.0.1:1"))
        let second = try #require(recorder.claim(peer: "127.0.0.1:2"))
        #expect(recorder.claim(peer: "127.0.0.1:3") == nil)
        #expect(recorder.overflowed == 1)
        first.release()
        #expect(try read(recorder).connections.map(\.peer) == ["127.0.0.1:2"])
        let third = try #require(recorder.claim(peer: "127.0.0.1:4"))
        #expect(Set(try read(recorder).connections.map(\.peer)) == ["127.0.0.1:2", "127.0.0.1:4"])
        // A reused slot starts empty.
        #expect(try read(recorder).connections.allSatisfy { $0.bytesIn == 0 && $0.lastInput.isEmpty })
        second.release()
        third.release()
        #expect(try read(recorder).connections.isEmpty)
    }

    @Test func aFrozenRecorderKeepsTheConnectionsOpenAtTheFailureAndTheSuspect() throws {
        let recorder = try recorder()
        let suspect = try #require(recorder.claim(peer: "127.0.0.2:1"))
        let bystander = try #require(recorder.claim(peer: "127.0.0.3:1"))
        suspect.setProcessing(true)
        recorder.freeze()
        // The instance unwinds and closes everything.
        suspect.setProcessing(false)
        suspect.release()
        bystander.release()
        #expect(recorder.claim(peer: "127.0.0.4:1") == nil)

        let connections = try read(recorder).connections
        #expect(connections.count == 2)
        #expect(connections.first { $0.peer == "127.0.0.2:1" }?.processing == true)
        #expect(connections.first { $0.peer == "127.0.0.3:1" }?.processing == false)
    }

    @Test func whatAnotherProcessLeftIsReadableAfterItsRecorderIsGone() throws {
        var path = ""
        do {
            let recorder = try recorder()
            path = recorder.path
            let slot = try #require(recorder.claim(peer: "127.0.0.2:9"))
            Array("AUTH LOGIN\r\n".utf8).withUnsafeBytes { slot.recordInput($0) }
            slot.setProcessing(true)
        }
        // Unmapped (as by a process's death): the file has it all.
        let recording = try #require(FlightRecording.read(path: path))
        #expect(recording.connections.first?.lastInput == Array("AUTH LOGIN\r\n".utf8))
        #expect(FlightRecorderDirectory(path: directory).files() == [path])
    }

    @Test func filesThatAreNotRecordersOrAreDamagedAreRefusedOrReadAsFarAsTheyGo() throws {
        #expect(FlightRecording.parse(Data()) == nil)
        #expect(FlightRecording.parse(Data(repeating: 0xFF, count: 10_000)) == nil)
        let recorder = try recorder(slots: 3)
        let slot = try #require(recorder.claim(peer: "127.0.0.2:1"))
        Array("x".utf8).withUnsafeBytes { slot.recordInput($0) }
        let whole = try #require(FileManager.default.contents(atPath: recorder.path))
        // Cut inside the first slot: the header is there, no whole slot is.
        #expect(FlightRecording.parse(whole.prefix(200))?.connections.isEmpty == true)
        #expect(FlightRecording.parse(whole.prefix(64)) == nil)
    }

    @Test func onlyTheFailingThreadsConnectionIsTheSuspect() throws {
        let recorder = try recorder()
        // Handed to one other thread, which alone uses it (as an event loop owns its connections' slots).
        nonisolated(unsafe) let busy = try #require(recorder.claim(peer: "127.0.0.1:1"))
        let culprit = try #require(recorder.claim(peer: "127.0.0.2:1"))
        // Another thread is in the middle of processing its connection…
        let started = DispatchSemaphore(value: 0)
        let finish = DispatchSemaphore(value: 0)
        let thread = Thread {
            busy.setProcessing(true)
            started.signal()
            finish.wait()
        }
        thread.start()
        started.wait()
        // …when this one, processing its own, reports the failure.
        culprit.setProcessing(true)
        recorder.freeze()
        finish.signal()

        let recording = try read(recorder)
        #expect(recording.connections.filter(\.processing).count == 2)
        #expect(recording.suspect?.peer == "127.0.0.2:1")

        // A failure reported by a thread that processes nothing names no one.
        let other = try FlightRecorder(path: directory + "/other.flight", service: "http", instance: 1, pid: 1, hostPid: 1)
        let connection = try #require(other.claim(peer: "127.0.0.3:1"))
        connection.setProcessing(true)
        let frozen = DispatchSemaphore(value: 0)
        let reporter = Thread {
            other.freeze()
            frozen.signal()
        }
        reporter.start()
        frozen.wait()
        let recording2 = try #require(FlightRecording.read(path: other.path))
        #expect(recording2.failingThread != nil && recording2.connections.first?.processing == true)
        #expect(recording2.suspect == nil)
    }

    @Test func aReleasedSlotIsNotWrittenThroughAnyMore() throws {
        let recorder = try recorder(slots: 1)
        let first = try #require(recorder.claim(peer: "127.0.0.1:1"))
        first.release()
        let second = try #require(recorder.claim(peer: "127.0.0.1:2"))
        // The first connection's handler finishing its read late must not touch the slot's new owner.
        first.setProcessing(false)
        Array("late".utf8).withUnsafeBytes { first.recordInput($0) }
        second.setProcessing(true)
        first.setProcessing(false)
        let connection = try #require(try read(recorder).connections.first)
        #expect(connection.peer == "127.0.0.1:2" && connection.processing && connection.bytesIn == 0)
    }
}
