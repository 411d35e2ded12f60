import CSystemd
import Glibc
import Logging

/// A swift-log handler that writes structured entries to the journal with `sd_journal_sendv`.
///
/// Each entry carries `MESSAGE`, `PRIORITY` (syslog levels, so `journalctl -p err` filters them),
/// `SYSLOG_IDENTIFIER`, `LOGGER` and every metadata key as an upper-cased journal field.
public struct JournaldLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let label: String
    private let identifier: String

    public init(label: String, identifier: String = "inetinfo") {
        self.label = label
        self.identifier = identifier
    }

    /// Whether standard error is connected to the journal (systemd sets `JOURNAL_STREAM` to its
    /// device and inode; a redirected stderr no longer matches them).
    public static var isStandardErrorJournal: Bool {
        guard let value = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(STDERR_FILENO, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        // The message carries the metadata too, so that `journalctl -p err` alone says which service
        // failed and why; each key is also a field of its own for filtering (`journalctl SERVICE=smtp`).
        let details = merged.sorted(by: { $0.key < $1.key }).map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        var fields = [
            "MESSAGE=\(event.message)\(details.isEmpty ? "" : " " + details)",
            "PRIORITY=\(Self.priority(event.level))",
            "SYSLOG_IDENTIFIER=\(identifier)",
            "LOGGER=\(label)",
            "CODE_FILE=\(event.file)",
            "CODE_LINE=\(event.line)",
            "CODE_FUNC=\(event.function)",
        ]
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            fields.append("\(Self.fieldName(key))=\(value)")
        }
        // sd_journal_sendv takes iovecs; keep the C strings alive for the duration of the call.
        let cStrings = fields.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var vectors = cStrings.map { iovec(iov_base: UnsafeMutableRawPointer($0), iov_len: strlen($0!)) }
        _ = sd_journal_sendv(&vectors, Int32(vectors.count))
    }

    /// syslog(3) priorities, which the journal uses.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    /// Journal field names are upper-case letters, digits and underscores, not starting with `_`.
    static func fieldName(_ key: String) -> String {
        let mapped = key.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }
        let name = String(mapped).drop(while: { $0 == "_" })
        return name.isEmpty ? "FIELD" : String(name)
    }
}
