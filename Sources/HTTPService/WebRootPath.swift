import Glibc

/// Maps a request target to a file inside the web root, or says why it cannot.
///
/// The path is percent-decoded once; `..` segments, backslashes and NUL are refused, and the result is
/// resolved with realpath(3) so that a symlink pointing outside the root is refused too. The caller opens
/// the real path with `O_NOFOLLOW` and checks that it is still the file resolved here (``FileIdentity``):
/// a symlink or a FIFO swapped in between the check and the open is refused, not followed or blocked on.
enum WebRootPath {
    enum Resolution: Equatable {
        /// `path` is the real path (inside the root, no symlinks); `probe` the path as requested below the
        /// root, which names the same file as long as nothing on the way changes (see ``FileCache``).
        case file(path: String, probe: String, identity: FileIdentity)
        case notFound
        case badRequest
        /// A directory asked for without the trailing slash: redirect, so relative links work.
        case directoryWithoutSlash(location: String)
    }

    static func resolve(target: String, root: String) -> Resolution {
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = parts.first.map(String.init) ?? ""
        guard path.hasPrefix("/") else { return .badRequest }
        // An encoded slash or backslash names no file here: it would only serve to slip past checks.
        // (Byte scans: this runs for every request.)
        let raw = Array(path.utf8)
        for index in raw.indices.dropLast(2) where raw[index] == UInt8(ascii: "%") {
            let escape = (raw[index + 1], raw[index + 2] | 0x20)
            if escape == (UInt8(ascii: "2"), UInt8(ascii: "f")) || escape == (UInt8(ascii: "5"), UInt8(ascii: "c")) { return .notFound }
        }
        guard let decoded = path.removingPercentEncodingStrict() else { return .badRequest }
        if decoded.utf8.contains(where: { $0 == 0 || $0 == UInt8(ascii: "\\") }) { return .notFound }
        let segments = decoded.split(separator: "/")
        if segments.contains(where: { $0 == ".." }) { return .notFound }
        var candidate = root + "/" + segments.joined(separator: "/")
        guard var resolved = inside(candidate, root: root) else { return .notFound }
        var info = stat()
        guard stat(resolved, &info) == 0 else { return .notFound }
        let isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
        if isDirectory {
            // Never `Location: //host/…`: a browser reads that as another site. One leading slash.
            // The query goes along: it may matter to whatever the index page runs.
            if !path.hasSuffix("/") {
                let query = parts.count > 1 ? "?" + parts[1] : ""
                return .directoryWithoutSlash(location: "/" + path.drop { $0 == "/" } + "/" + query)
            }
            candidate += "/index.html"
            guard let index = inside(resolved + "/index.html", root: root), stat(index, &info) == 0 else { return .notFound }
            resolved = index
        }
        // `/file.txt/` names a directory that is not there (as open(2) says: ENOTDIR), not the file.
        guard (info.st_mode & S_IFMT) == S_IFREG, !path.hasSuffix("/") || isDirectory else { return .notFound }
        return .file(path: resolved, probe: candidate, identity: FileIdentity(info))
    }

    private static func inside(_ path: String, root: String) -> String? {
        guard let pointer = realpath(path, nil) else { return nil }
        defer { free(pointer) }
        let resolved = String(cString: pointer)
        return resolved == root || resolved.hasPrefix(root.hasSuffix("/") ? root : root + "/") ? resolved : nil
    }
}

/// Which file a path named when it was checked: an open of the path must find the same one.
struct FileIdentity: Equatable, Sendable {
    var device: UInt
    var inode: UInt

    init(_ info: stat) {
        device = UInt(info.st_dev)
        inode = UInt(info.st_ino)
    }

    init(device: UInt, inode: UInt) {
        self.device = device
        self.inode = inode
    }

    /// Opens `path` for reading if it is still this regular file: the last component is not followed if
    /// it became a symlink, a FIFO does not block the event loop (`O_NONBLOCK`), and anything else that
    /// took its place is refused. Returns the descriptor and its status, or nil.
    func open(_ path: String) -> (fd: Int32, info: stat)? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, FileIdentity(info) == self else {
            close(fd)
            return nil
        }
        return (fd, info)
    }
}

extension String {
    /// Percent-decoding that fails on a malformed escape or invalid UTF-8 instead of guessing.
    func removingPercentEncodingStrict() -> String? {
        var bytes: [UInt8] = []
        var iterator = utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(Self.hexValue), let low = iterator.next().flatMap(Self.hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
