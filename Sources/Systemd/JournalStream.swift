import CSystemd
import Glibc

/// A stream connection to the journal (`sd_journal_stream_fd(3)`): every line written to it becomes one
/// entry, so a block of lines costs one write instead of one `sd_journal_sendv` per line.
public enum JournalStream {
    public struct OpenError: Error, CustomStringConvertible, Sendable {
        public var identifier: String
        public var errno: Int32
        public var description: String {
            "cannot open a stream to the journal for \(identifier): \(String(cString: strerror(errno)))"
        }
    }

    /// A descriptor whose lines are entries with `SYSLOG_IDENTIFIER=identifier` and `PRIORITY=priority`
    /// (syslog(3) levels; 6 is info). The caller closes it.
    public static func open(identifier: String, priority: Int32 = 6) throws(OpenError) -> Int32 {
        let fd = sd_journal_stream_fd(identifier, priority, 0)
        guard fd >= 0 else { throw OpenError(identifier: identifier, errno: -fd) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return fd
    }
}
