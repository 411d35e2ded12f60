import CProcessControl
import Glibc

/// A worker's figures in a file the host creates and the worker `mmap`s (process isolation): what the
/// worker's instance counts lands in memory the host can read at any time, and still read once the worker
/// has crashed: a crash loses nothing that was counted, however soon it follows.
///
/// Layout (host byte order; the host and its workers are one binary on one machine): a header of
/// ``headerSize`` bytes (``magic``, then the worker's pid as 4 bytes), then ``slotCount`` slots of
/// ``slotSize`` bytes, one per series:
///
/// | offset | size | |
/// | --- | --- | --- |
/// | 0 | 4 | kind: 0 free, 1 counter, 2 gauge, 3 histogram (stored last, with release order) |
/// | 4 | 4 | key length |
/// | 8 | ``keyCapacity`` | key: the name, then `\t` `label=value` per label |
/// | ``valueOffset`` | 8 | counter: the count; gauge: a Double's bits |
/// | ``countsOffset`` | 8 × ``buckets`` | histogram: observations per bucket of ``MetricCatalog/durationBuckets``, then beyond |
/// | ``sumsOffset`` | 8 × ``buckets`` | histogram: their sums, in nanoseconds |
///
/// The worker writes with atomic operations and never frees a slot; the host reads the file with `pread`
/// (never through a mapping: a worker that shrank the file would make a mapped read fault) and trusts
/// nothing in it (``read(path:)``).
enum FigureFile {
    static let magic: UInt64 = 0x3147_4946_5445_4E49  // "INETFIG1"
    static let headerSize = 64
    static let keyCapacity = 200
    static let buckets = MetricCatalog.durationBuckets.count + 1
    static let valueOffset = 8 + keyCapacity
    static let countsOffset = valueOffset + 8
    static let sumsOffset = countsOffset + 8 * buckets
    static let slotSize = (sumsOffset + 8 * buckets + 63) / 64 * 64
    static let slotCount = 256
    static let size = headerSize + slotCount * slotSize

    enum Kind: UInt32 {
        case counter = 1, gauge = 2, histogram = 3
    }

    /// One series as read from a file.
    struct Series: Equatable {
        var name: String
        var labels: [String: String]
        var kind: Kind
        /// Counter: the count; gauge: the level (its bits).
        var value: UInt64
        var counts: [UInt64]
        var sums: [UInt64]
    }

    static func key(_ name: String, _ dimensions: [(String, String)]) -> [UInt8] {
        Array((name + dimensions.map { "\t\($0.0)=\($0.1)" }.joined()).utf8)
    }

    /// Creates the (zeroed) file for worker `pid`; the caller gives the worker its path.
    static func create(path: String, pid: Int32) throws(FigureFileError) {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw FigureFileError(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw FigureFileError(operation: "ftruncate", path: path, errno: errno) }
        var header = [UInt8](repeating: 0, count: headerSize)
        withUnsafeBytes(of: magic) { header.replaceSubrange(0..<8, with: $0) }
        withUnsafeBytes(of: pid) { header.replaceSubrange(8..<12, with: $0) }
        guard header.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, 0) }) == headerSize else {
            throw FigureFileError(operation: "pwrite", path: path, errno: errno)
        }
    }

    /// Every published series of the file at `path`, or `nil` when it is not a figure file (missing,
    /// not a regular file, another size, another magic). Slots that do not make sense are skipped.
    static func read(path: String) -> [Series]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG, status.st_size == off_t(size) else { return nil }
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, size - done, off_t(done)) }
            guard count > 0 else { return nil }
            done += count
        }
        return parse(bytes)
    }

    /// The series in a file's bytes (the fuzzer's entry point).
    static func parse(_ bytes: [UInt8]) -> [Series]? {
        guard bytes.count == size else { return nil }
        return bytes.withUnsafeBytes { raw -> [Series]? in
            guard raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self) == magic else { return nil }
            var series: [Series] = []
            for slot in 0..<slotCount {
                let base = headerSize + slot * slotSize
                guard let kind = Kind(rawValue: raw.loadUnaligned(fromByteOffset: base, as: UInt32.self)) else { continue }
                let length = Int(raw.loadUnaligned(fromByteOffset: base + 4, as: UInt32.self))
                guard length > 0, length <= keyCapacity,
                      let key = String(validating: raw[(base + 8)..<(base + 8 + length)], as: UTF8.self)
                else { continue }
                let parts = key.split(separator: "\t", omittingEmptySubsequences: false)
                var labels: [String: String] = [:]
                var wellFormed = !parts[0].isEmpty
                for part in parts.dropFirst() {
                    guard let equals = part.firstIndex(of: "="), labels[String(part[..<equals])] == nil else {
                        wellFormed = false
                        break
                    }
                    labels[String(part[..<equals])] = String(part[part.index(after: equals)...])
                }
                guard wellFormed else { continue }
                func words(at offset: Int) -> [UInt64] {
                    (0..<buckets).map { raw.loadUnaligned(fromByteOffset: base + offset + 8 * $0, as: UInt64.self) }
                }
                series.append(Series(name: String(parts[0]), labels: labels, kind: kind,
                                     value: raw.loadUnaligned(fromByteOffset: base + valueOffset, as: UInt64.self),
                                     counts: kind == .histogram ? words(at: countsOffset) : [],
                                     sums: kind == .histogram ? words(at: sumsOffset) : []))
            }
            return series
        }
    }
}

struct FigureFileError: Error, CustomStringConvertible {
    var operation: String
    var path: String
    var errno: Int32
    var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}
