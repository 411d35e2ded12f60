import Foundation
import HostControl
import NIOConcurrencyHelpers

/// The crash records on disk: `<state-dir>/crashes/<id>/record.json` (and `backtrace.txt`, the same
/// report as plain text for the operator's pager).
///
/// Contract: a record appears whole or not at all (written in a hidden directory, then renamed); ids
/// sort by time, and after every write the oldest records go until at most `keep` remain and they take
/// at most `maxBytes` together (the newest stays even if it alone is larger). Nothing else is ever kept.
final class CrashStore: Sendable {
    let directory: String
    let keep: Int
    let maxBytes: Int64

    // Serializes writes and pruning (crash records are written from tasks, one per failure).
    private let lock = NIOLock()

    init(directory: String, keep: Int, maxBytes: Int64) {
        self.directory = directory
        self.keep = keep
        self.maxBytes = maxBytes
    }

    /// A new id for a record made `at`: time first, so that names sort as the crashes happened.
    func makeID(at date: Date, service: String, instance: Int) -> String {
        var time = tm()
        // Within 1970…9999 whatever the date (a leftover's may come from a damaged file): no conversion traps.
        let clamped = min(max(date.timeIntervalSince1970, 0), 253_402_300_799.999)
        var seconds = time_t(clamped.rounded(.down))
        gmtime_r(&seconds, &time)
        let milliseconds = Int((clamped - clamped.rounded(.down)) * 1000) % 1000
        let stamp = String(format: "%04d%02d%02d-%02d%02d%02d-%03d", Int(time.tm_year) + 1900, Int(time.tm_mon) + 1,
                           Int(time.tm_mday), Int(time.tm_hour), Int(time.tm_min), Int(time.tm_sec), milliseconds)
        // A leftover's service name comes from its file: only what a record's name may hold.
        let name = String(service.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)) }.prefix(32))
        let base = "\(stamp)-\(name.isEmpty ? "unknown" : name)-\(instance)"
        return lock.withLock {
            var id = base
            var attempt = 1
            while FileManager.default.fileExists(atPath: "\(directory)/\(id)") {
                attempt += 1
                id = "\(base)-\(attempt)"
            }
            return id
        }
    }

    /// Whether `id` can name a record (it becomes a path: nothing but letters, digits, `-` and `.`).
    static func isValid(id: String) -> Bool {
        !id.isEmpty && id.count <= 200 && !id.hasPrefix(".")
            && id.utf8.allSatisfy { $0 == 0x2D || $0 == 0x2E || (0x30...0x39).contains($0) || (0x41...0x5A).contains($0)
                || (0x61...0x7A).contains($0) }
    }

    func write(_ record: CrashRecord) throws {
        guard Self.isValid(id: record.id) else { throw CrashStoreError(id: record.id) }
        let data = try ControlJSON.encoder().encode(record)
        try lock.withLock {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            let staging = "\(directory)/.\(record.id)"
            try? FileManager.default.removeItem(atPath: staging)
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: false)
            try data.write(to: URL(fileURLWithPath: "\(staging)/record.json"))
            if let backtrace = record.backtrace {
                try Data(backtrace.utf8).write(to: URL(fileURLWithPath: "\(staging)/backtrace.txt"))
            }
            try FileManager.default.moveItem(atPath: staging, toPath: "\(directory)/\(record.id)")
            prune()
        }
    }

    /// Every record's id, oldest first.
    func ids() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter(Self.isValid(id:)).sorted()
    }

    func load(id: String) -> CrashRecord? {
        guard Self.isValid(id: id),
              let data = FileManager.default.contents(atPath: "\(directory)/\(id)/record.json")
        else { return nil }
        return try? ControlJSON.decoder().decode(CrashRecord.self, from: data)
    }

    /// Oldest first.
    func summaries() -> [CrashSummary] {
        ids().compactMap { load(id: $0)?.summary }
    }

    /// Called under the lock, after a write.
    private func prune() {
        let records = ids().map { id in (id: id, bytes: Self.size(of: "\(directory)/\(id)")) }
        var count = records.count
        var total = records.reduce(Int64(0)) { $0 + $1.bytes }
        for record in records.dropLast() where count > keep || total > maxBytes {
            try? FileManager.default.removeItem(atPath: "\(directory)/\(record.id)")
            count -= 1
            total -= record.bytes
        }
        // Staging directories left by a host that died while writing.
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix(".") {
            try? FileManager.default.removeItem(atPath: "\(directory)/\(name)")
        }
    }

    private static func size(of path: String) -> Int64 {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return files.reduce(Int64(0)) { total, file in
            let attributes = try? FileManager.default.attributesOfItem(atPath: "\(path)/\(file)")
            return total + ((attributes?[.size] as? NSNumber)?.int64Value ?? 0)
        }
    }
}

struct CrashStoreError: Error, CustomStringConvertible {
    var id: String
    var description: String { "'\(id)' cannot name a crash record" }
}
