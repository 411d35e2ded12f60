import Foundation
import Glibc
import NIOConcurrencyHelpers

/// A worker's standard error, read by the host: passed on to the host's own (so the journal has it as
/// before) and its tail kept, for the crash report the Swift runtime writes there when the worker traps
/// or crashes.
///
/// Contract: one thread per worker reads the pipe until EOF (the worker and everything it started are
/// gone); ``crashStarted`` is called once, as soon as the runtime's crash output begins (the worker is
/// then crashing, not hung: its backtracer may take a while); ``crashReport`` is that output, at most
/// ``tailBytes`` of it.
final class WorkerStandardError: Sendable {
    static let tailBytes = 64 * 1024

    /// How the Swift runtime begins its crash output: the message of a trap (`fatalError`, `precondition`,
    /// a failed check), `[FILE:LINE: ]Fatal error: …` at the start of a line, or the backtracer's header.
    /// Anchored at the line's start (after the optional `FILE:LINE: `), so that a log line quoting a peer's
    /// text cannot pass for one.
    static let messageMarkers = ["Fatal error:", "Precondition failed:", "Assertion failed:"]
    static let signalMarkers = ["*** Signal ", "*** Program crashed:", "💣 Program crashed:"]

    static func isMessageLine(_ line: Substring) -> Bool {
        if messageMarkers.contains(where: { line.hasPrefix($0) }) { return true }
        // `SMTPService/SMTPService.swift:58: Fatal error: …`: one word without spaces, a line number.
        guard let space = line.firstIndex(of: " "), line[..<space].hasSuffix(":") else { return false }
        let location = line[..<line.index(before: space)]
        guard let colon = location.lastIndex(of: ":"), !location[location.index(after: colon)...].isEmpty,
              location[location.index(after: colon)...].allSatisfy(\.isASCII), location[location.index(after: colon)...].allSatisfy(\.isNumber)
        else { return false }
        let rest = line[line.index(after: space)...]
        return messageMarkers.contains { rest.hasPrefix($0) }
    }

    private struct State {
        var tail: [UInt8] = []
        var crashing = false
        var finished = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    // Guards the tail and the end of the stream: written by the reading thread, read by the host.
    private let state = NIOLockedValueBox(State())

    private let fd: Int32

    /// `fd`: the pipe's read end, which this object closes at EOF.
    init(fd: Int32) {
        self.fd = fd
    }

    /// Starts reading.
    func start(crashStarted: @escaping @Sendable () -> Void) {
        let fd = self.fd
        let thread = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 16 * 1024)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else { break }
                let chunk = buffer[0..<count]
                chunk.withUnsafeBytes { bytes in
                    var offset = 0
                    while offset < bytes.count {
                        let written = write(STDERR_FILENO, bytes.baseAddress! + offset, bytes.count - offset)
                        if written < 0 && errno == EINTR { continue }
                        guard written > 0 else { break }
                        offset += written
                    }
                }
                if append(chunk) { crashStarted() }
            }
            close(fd)
            finish()
        }
        thread.name = "worker-stderr"
        thread.start()
    }

    /// Keeps the tail; returns `true` the first time crash output shows up.
    private func append(_ chunk: ArraySlice<UInt8>) -> Bool {
        state.withLockedValue { state in
            state.tail.append(contentsOf: chunk)
            if state.tail.count > Self.tailBytes { state.tail.removeFirst(state.tail.count - Self.tailBytes) }
            guard !state.crashing, Self.crashOutputStart(in: String(decoding: chunk, as: UTF8.self)) != nil else { return false }
            state.crashing = true
            return true
        }
    }

    private func finish() {
        let waiters = state.withLockedValue { state in
            state.finished = true
            defer { state.waiters = [] }
            return state.waiters
        }
        waiters.forEach { $0.resume() }
    }

    /// Returns once the stream has ended, or `timeout` later.
    func finished(within timeout: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLockedValue { state -> Bool in
                if !state.finished { state.waiters.append(continuation) }
                return state.finished
            }
            if done { return continuation.resume() }
            Task {
                try? await Task.sleep(for: timeout)
                let waiter = self.state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
                    // Still waiting: take it out, so that it is resumed once.
                    state.waiters.isEmpty ? nil : state.waiters.removeFirst()
                }
                waiter?.resume()
            }
        }
    }

    /// The runtime's crash output, `nil` if the worker wrote none.
    var crashReport: String? {
        let tail = String(decoding: state.withLockedValue { $0.tail }, as: UTF8.self)
        return Self.crashOutputStart(in: tail).map { String(tail[$0...]) }
    }

    /// Where the crash output begins in `text`: the line of the last trap message, else the first line
    /// of the backtracer's.
    static func crashOutputStart(in text: String) -> String.Index? {
        var message: String.Index?
        var signal: String.Index?
        var lineStart = text.startIndex
        while lineStart < text.endIndex {
            let lineEnd = text[lineStart...].firstIndex(of: "\n") ?? text.endIndex
            let line = text[lineStart..<lineEnd]
            if isMessageLine(line) { message = lineStart }
            if signal == nil, signalMarkers.contains(where: { line.hasPrefix($0) }) { signal = lineStart }
            lineStart = lineEnd < text.endIndex ? text.index(after: lineEnd) : text.endIndex
        }
        return message ?? signal
    }
}
