import Foundation
import Glibc
import Logging
import Systemd

/// Where the access log goes, written in blocks by a thread of its own.
///
/// Event loops only append a formatted line to a buffer in memory (``append(peer:rest:)``); the writer
/// thread writes what gathered every 100 ms, or as soon as 32 KiB did: one `write(2)` per block, never a
/// system call per request on an event loop. The destinations:
/// - a file (`http.access-log = PATH`), opened `O_APPEND`, so that every block lands whole;
/// - the host's log (`log`): under the journal, a stream connection to it (`sd_journal_stream_fd`), where
///   each line is an entry with `SYSLOG_IDENTIFIER=inetinfo-access` and priority info; otherwise standard
///   error, in chunks of at most `PIPE_BUF` bytes cut at line ends, so that no other writer of the same
///   pipe can split a line. Off when the host's log level is above `info`, as the lines' level is.
///
/// A destination that cannot keep up never slows a request: past 4 MiB waiting, lines are dropped and
/// counted, and the writer says how many in the host's log.
final class AccessLogSink: @unchecked Sendable {
    /// The journal identifier of access log entries (`journalctl -t inetinfo-access`).
    static let journalIdentifier = "inetinfo-access"
    /// A block is written once this much gathered, without waiting for the next tick.
    static let blockSize = 32 * 1024
    static let maxPending = 4 * 1024 * 1024
    static let interval = 0.1

    private let descriptor: Int32
    private let ownsDescriptor: Bool
    /// The largest write; a block is cut at line ends below it (`PIPE_BUF` for a shared pipe).
    private let chunkSize: Int
    private let logger: Logger

    /// Guards every `var` below: appended to by every event loop, swapped out by the writer.
    private let condition = NSCondition()
    private var pending: [UInt8] = []
    private var dropped = 0
    private var stopping = false
    private var writerEnded = false
    /// The access log's timestamp (`[03/Dec/2026:13:58:37 +0000]`), formatted once a second.
    private var stampSecond = -1
    private var stamp: [UInt8] = []

    /// `nil` when the setting (or the host's log level) turns the access log off.
    static func make(_ setting: HTTPSettings.AccessLog, logger: Logger) throws -> AccessLogSink? {
        switch setting {
        case .off:
            return nil
        case .file(let path):
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else {
                throw HTTPConfigurationError("http.access-log: cannot open \(path): \(String(cString: strerror(errno)))")
            }
            return AccessLogSink(descriptor: fd, ownsDescriptor: true, chunkSize: .max, logger: logger)
        case .log:
            guard logger.logLevel <= .info else { return nil }
            if logger.handler is JournaldLogHandler {
                do {
                    let fd = try JournalStream.open(identifier: journalIdentifier)
                    return AccessLogSink(descriptor: fd, ownsDescriptor: true, chunkSize: .max, logger: logger)
                } catch {
                    logger.warning("access log: standard error instead of the journal", metadata: ["error": "\(error)"])
                }
            }
            return AccessLogSink(descriptor: STDERR_FILENO, ownsDescriptor: false, chunkSize: Int(PIPE_BUF), logger: logger)
        }
    }

    private init(descriptor: Int32, ownsDescriptor: Bool, chunkSize: Int, logger: Logger) {
        self.descriptor = descriptor
        self.ownsDescriptor = ownsDescriptor
        self.chunkSize = chunkSize
        self.logger = logger
        pending.reserveCapacity(Self.blockSize * 2)
        let writer = Thread { [self] in writeUntilStopped() }
        writer.name = "access-log"
        writer.start()
    }

    /// Appends one line: `peer - - [time] rest\n` (the time is the sink's, cached per second).
    func append(peer: [UInt8], rest: [UInt8]) {
        condition.lock()
        defer { condition.unlock() }
        let length = peer.count + rest.count + 64
        guard !stopping, pending.count <= Self.maxPending - length else {
            dropped += 1
            return
        }
        let now = time(nil)
        if now != stampSecond {
            stampSecond = now
            stamp = Array(HTTPDate.text(seconds: now, format: "%d/%b/%Y:%H:%M:%S %z", localTime: true).utf8)
        }
        let wasBelowBlock = pending.count < Self.blockSize
        pending += peer
        pending += " - - [".utf8
        pending += stamp
        pending += "] ".utf8
        pending += rest
        pending.append(0x0A)
        if wasBelowBlock && pending.count >= Self.blockSize { condition.signal() }
    }

    /// Writes what is buffered and ends the writer (the instance ends); closes the destination if it is
    /// the sink's own. Waits at most `timeout` for a destination that blocks (a pipe nobody reads): then
    /// the writer is left to finish on its own, with its descriptor.
    func close(within timeout: TimeInterval = 3) {
        let deadline = Date(timeIntervalSinceNow: timeout)
        condition.lock()
        stopping = true
        condition.signal()
        while !writerEnded, condition.wait(until: deadline) {}
        let ended = writerEnded
        condition.unlock()
        guard ended else {
            return logger.warning("access log: the destination blocks; its last lines are still being written")
        }
        if ownsDescriptor { Glibc.close(descriptor) }
    }

    private func writeUntilStopped() {
        var block: [UInt8] = []
        block.reserveCapacity(Self.blockSize * 2)
        while true {
            condition.lock()
            if !stopping && pending.count < Self.blockSize {
                _ = condition.wait(until: Date(timeIntervalSinceNow: Self.interval))
            }
            swap(&block, &pending)
            let (lost, last) = (dropped, stopping)
            dropped = 0
            condition.unlock()

            if lost > 0 {
                logger.warning("access log lines dropped: the destination does not keep up", metadata: ["lines": "\(lost)"])
            }
            if !block.isEmpty { write(block) }
            block.removeAll(keepingCapacity: true)
            if last { break }
        }
        condition.lock()
        writerEnded = true
        condition.broadcast()
        condition.unlock()
    }

    /// Writes `block` whole, in chunks of at most `chunkSize` cut after a newline (a longer line goes
    /// alone); on an error the rest of the block is lost, and said so.
    private func write(_ block: [UInt8]) {
        block.withUnsafeBytes { bytes in
            guard let base = bytes.baseAddress else { return }
            var start = 0
            while start < bytes.count {
                var end = bytes.count
                if end - start > chunkSize {
                    let limit = start + chunkSize
                    end = (start..<limit).last { bytes[$0] == 0x0A }.map { $0 + 1 }
                        ?? (limit..<bytes.count).first { bytes[$0] == 0x0A }.map { $0 + 1 } ?? bytes.count
                }
                while start < end {
                    let written = Glibc.write(descriptor, base + start, end - start)
                    if written < 0 {
                        if errno == EINTR { continue }
                        logger.warning("access log: write failed, lines lost",
                                       metadata: ["error": "\(String(cString: strerror(errno)))", "bytes": "\(bytes.count - start)"])
                        return
                    }
                    start += written
                }
            }
        }
    }
}
