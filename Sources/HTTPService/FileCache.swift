import Glibc
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Remembers what request paths resolved to, and the content of small files, so that a repeated request
/// costs one stat(2) instead of a realpath(3) walk (a readlink per path component), an open, two stats,
/// a read and a close. Like nginx's `open_file_cache`, but revalidated on every hit rather than after a
/// period: nothing stale is ever served.
///
/// Each hit stats the path *as requested* (following symlinks, as the first resolution did) and compares
/// the file's identity — device, inode, size, modification and change times — with the one recorded when
/// the entry was made. Equal identity means the path still names the very file that was resolved inside
/// the web root then, so neither a renamed symlink nor a replaced directory can make a cached entry serve
/// a byte from elsewhere: any change sends the request down the full resolution again.
///
/// Files modified within the last ``settleSeconds`` are not cached: file times have a granularity of a
/// clock tick, so a write in the same tick as the read that filled the cache would leave the identity
/// unchanged (git's "racy clean" problem).
final class FileCache: Sendable {
    /// What the cache knows about one request path. A class, immutable: a hit hands out one reference,
    /// not a copy of every string and header in it (a retain each, on every request).
    final class Entry: Sendable {
        /// The file's real path (no symlinks, inside the web root), opened for content not kept here.
        let file: String
        /// The path as requested, below the web root; stat(2)ed to revalidate.
        let probe: String
        let identity: Identity
        let validators: Validators
        /// `ETag`, `Last-Modified` and `Accept-Ranges`, as a 304 carries them.
        let validatorHeaders: [(String, String)]
        /// The headers of a whole-file 200 (``ResponseEncoder`` adds `Date`), built once: a keep-alive
        /// request for a cached file uses them as they are instead of assembling them field by field.
        let fullResponseHeaders: HTTPHeaders
        /// The same fields encoded for the wire (``ResponseEncoder/withPreparedFields(_:_:)``).
        let fullResponseFields: ByteBuffer
        /// The whole content, for files up to ``FileCache/maxContentSize``; nil: sent from the file.
        let content: ByteBuffer?

        init(file: String, probe: String, identity: Identity, validators: Validators, contentType: String, content: ByteBuffer?) {
            self.file = file
            self.probe = probe
            self.identity = identity
            self.validators = validators
            self.content = content
            validatorHeaders = [("ETag", validators.etag), ("Last-Modified", HTTPDate.format(seconds: validators.modifiedSeconds)),
                                ("Accept-Ranges", "bytes")]
            fullResponseHeaders = HTTPHeaders([("Server", "inetinfo")] + validatorHeaders
                                              + [("Content-Type", contentType), ("Content-Length", String(validators.size))])
            fullResponseFields = ResponseEncoder.encodeFields(fullResponseHeaders)
        }

        /// What an entry costs the budget under `key`: the key (a request path, up to
        /// `http.max-request-line` octets) counts as much as the paths and content it maps to.
        func cost(key: String) -> Int { 256 + key.utf8.count + file.utf8.count + probe.utf8.count + (content?.readableBytes ?? 0) }
    }

    /// What makes two stat(2) results the same unchanged file.
    struct Identity: Equatable, Sendable {
        var device: UInt
        var inode: UInt
        var size: Int
        var modified: timespec
        var changed: timespec

        init(_ info: stat) {
            device = UInt(info.st_dev)
            inode = UInt(info.st_ino)
            size = Int(info.st_size)
            modified = info.st_mtim
            changed = info.st_ctim
        }

        static func == (a: Identity, b: Identity) -> Bool {
            a.device == b.device && a.inode == b.inode && a.size == b.size
                && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
                && a.changed.tv_sec == b.changed.tv_sec && a.changed.tv_nsec == b.changed.tv_nsec
        }
    }

    /// Content larger than this is not kept in memory (it goes by sendfile(2) anyway).
    static let maxContentSize = 64 * 1024
    /// Files changed this recently are not cached (see the type's comment).
    static let settleSeconds = 2
    /// Entries are small without content; this bounds the table for a site with many paths.
    static let maxEntries = 10_000

    /// The memory budget, `http.file-cache-size`; 0 turns the cache off.
    let capacity: Int
    // Guards the table and its total cost; every event loop of the instance looks entries up.
    private let state = NIOLockedValueBox((entries: [String: Entry](), cost: 0))

    init(capacity: Int) { self.capacity = capacity }

    /// The entry for `key` (a request path without its query) if the file it names is unchanged.
    func lookup(_ key: String) -> Entry? {
        guard capacity > 0, let entry = state.withLockedValue({ $0.entries[key] }) else { return nil }
        var info = stat()
        if stat(entry.probe, &info) == 0, Identity(info) == entry.identity { return entry }
        state.withLockedValue { state in
            if let removed = state.entries.removeValue(forKey: key) { state.cost -= removed.cost(key: key) }
        }
        return nil
    }

    /// Whether a file with this status may be cached now.
    func admits(_ info: stat) -> Bool {
        let newest = max(Int(info.st_mtim.tv_sec), Int(info.st_ctim.tv_sec))
        return capacity > 0 && newest + Self.settleSeconds < Int(time(nil))
    }

    func insert(_ entry: Entry, for key: String) {
        let cost = entry.cost(key: key)
        guard cost <= capacity else { return }
        state.withLockedValue { state in
            if let replaced = state.entries.updateValue(entry, forKey: key) { state.cost -= replaced.cost(key: key) }
            state.cost += cost
            // Over budget: drop arbitrary entries (a dictionary's order) until it fits. A busy site keeps
            // re-adding what it serves most; no recency is tracked on the hot path.
            while state.cost > capacity || state.entries.count > Self.maxEntries,
                  let victim = state.entries.first(where: { $0.key != key }) {
                state.entries.removeValue(forKey: victim.key)
                state.cost -= victim.value.cost(key: victim.key)
            }
        }
    }
}
