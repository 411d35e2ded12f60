import Foundation
import HostControl
@testable import InetinfoHost
import Testing

/// The crash records on disk: whole or absent, and bounded in count and size however many crashes come.
@Suite struct CrashStoreTests {
    let directory = NSTemporaryDirectory() + "crashes-\(UUID().uuidString)"

    func record(_ store: CrashStore, instance: Int, backtraceBytes: Int = 0, at date: Date) -> CrashRecord {
        CrashRecord(id: store.makeID(at: date, service: "smtp", instance: instance), service: "smtp", instance: instance,
                    pid: 42, signal: "SIGSEGV", exitStatus: nil, reason: "worker exited on signal SIGSEGV", at: date,
                    uptimeSeconds: 1, backtrace: backtraceBytes > 0 ? String(repeating: "x", count: backtraceBytes) : nil,
                    events: [], connections: [], connectionsOmitted: 0)
    }

    @Test func hundredsOfCrashesLeaveTheNewestKeepAndNothingHalfWritten() throws {
        let store = CrashStore(directory: directory, keep: 10, maxBytes: 1 << 30)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var written: [String] = []
        for instance in 1...300 {
            let record = record(store, instance: instance, at: start.addingTimeInterval(Double(instance) / 1000))
            try store.write(record)
            written.append(record.id)
        }
        #expect(store.ids() == Array(written.suffix(10)))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == Array(written.suffix(10)))
        #expect(store.load(id: written.last!)?.instance == 300)
        #expect(store.summaries().map(\.instance) == Array(291...300))
    }

    @Test func theSizeBoundRemovesTheOldestButNeverTheNewest() throws {
        let store = CrashStore(directory: directory, keep: 100, maxBytes: 1 << 20)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        for instance in 1...12 {
            // Each about 300 KiB (its backtrace twice: in the record and in backtrace.txt).
            try store.write(record(store, instance: instance, backtraceBytes: 150_000, at: start.addingTimeInterval(Double(instance))))
        }
        let kept = store.summaries().map(\.instance)
        #expect(kept == [10, 11, 12], "\(kept)")
        // A record larger than the whole bound is still kept, alone: the newest always is.
        try store.write(record(store, instance: 13, backtraceBytes: 600_000, at: start.addingTimeInterval(13)))
        #expect(store.summaries().map(\.instance) == [13])
    }

    @Test func idsNameNoOtherPathAndTwoCrashesInOneMillisecondGetTwoIDs() throws {
        let store = CrashStore(directory: directory, keep: 100, maxBytes: 1 << 30)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for bad in ["", "..", "../etc", "a/b", ".hidden", "x y", String(repeating: "a", count: 201)] {
            #expect(!CrashStore.isValid(id: bad), "\(bad)")
            #expect(store.load(id: bad) == nil)
        }
        let date = Date(timeIntervalSince1970: 1_800_000_000.5)
        let first = record(store, instance: 1, at: date)
        try store.write(first)
        let second = record(store, instance: 1, at: date)
        #expect(second.id != first.id)
        try store.write(second)
        #expect(store.ids() == [first.id, second.id])
        #expect(first.id.hasPrefix("20270115-080000-500-smtp-1"))
    }
}

/// A peer's input on an operator's terminal: every line as it was sent, nothing that a terminal would act on.
@Test func crashShowRendersAPeersInputSafely() {
    var input = Data("HELO x\r\nAUTH \\ LOGIN\n".utf8)
    input += Data([0x1B, 0x5B, 0x33, 0x31, 0x6D, 0x00, 0xFF, 0x0D])
    #expect(CrashPresenter.escapedLines(input) == [#"HELO x\r\n"#, #"AUTH \\ LOGIN\n"#, #"\x1B[31m\x00\xFF\x0D"#])
    #expect(CrashPresenter.escapedLines(Data()) == [""])
    #expect(CrashPresenter.escaped("a\u{1B}]0;title\u{07}b") == #"a\x1B]0;title\x07b"#)
    // Readable text stays readable (an event line's arrow); what a terminal would act on does not.
    #expect(CrashPresenter.escaped("stopped → starting, naïve") == "stopped → starting, naïve")
    #expect(CrashPresenter.escaped("a\u{202E}b\u{9B}c\\d") == #"a\xE2\x80\xAEb\xC2\x9Bc\\d"#)
}
