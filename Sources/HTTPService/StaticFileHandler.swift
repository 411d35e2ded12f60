import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Answers GET and HEAD (the only methods ``RequestGuard`` lets through) with files from the web root:
/// validators (`ETag`, `Last-Modified`), conditional requests (304), a single byte range (206, 416), and
/// the content as a zero-copy `FileRegion`, which NIO sends with sendfile(2) as the socket drains.
final class StaticFileHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let root: String
    private var head: HTTPRequestHead?
    private var date = HTTPDate.Cache()

    init(root: String) {
        self.root = root
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext) {
        let path: String
        switch WebRootPath.resolve(target: request.uri, root: root) {
        case .badRequest: return SimpleResponse.send(.badRequest, to: request, context: context)
        case .notFound: return SimpleResponse.send(.notFound, to: request, context: context)
        case .directoryWithoutSlash(let location):
            return SimpleResponse.send(.movedPermanently, to: request, context: context, headers: [("Location", location)])
        case .file(let resolved): path = resolved
        }
        // open(2) and fstat(2) on a local file are quick; doing them on the event loop saves two thread
        // hops per request.
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        var info = stat()
        guard fd >= 0, fstat(fd, &info) == 0 else {
            if fd >= 0 { close(fd) }
            return SimpleResponse.send(.notFound, to: request, context: context)
        }
        let size = Int(info.st_size)
        let modified = Int(info.st_mtim.tv_sec)
        let validators = Validators(size: size, modifiedSeconds: modified, modifiedNanoseconds: Int(info.st_mtim.tv_nsec))

        var headers = HTTPHeaders()
        headers.add(name: "Server", value: "inetinfo")
        headers.add(name: "Date", value: date.now())
        headers.add(name: "ETag", value: validators.etag)
        headers.add(name: "Last-Modified", value: HTTPDate.format(seconds: modified))
        headers.add(name: "Accept-Ranges", value: "bytes")

        if validators.notModified(request.headers) {
            close(fd)
            return SimpleResponse.send(.notModified, to: request, context: context, headers: Array(headers.map { ($0.name, $0.value) }))
        }
        headers.add(name: "Content-Type", value: MediaType.forPath(path))

        var status = HTTPResponseStatus.ok
        var range = 0..<size
        if let rangeHeader = request.headers.first(name: "Range"), validators.rangeApplies(request.headers) {
            switch ByteRange.parse(rangeHeader, size: size) {
            case .satisfiable(let requested):
                status = .partialContent
                range = requested
                headers.add(name: "Content-Range", value: "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(size)")
            case .unsatisfiable:
                close(fd)
                return SimpleResponse.send(.rangeNotSatisfiable, to: request, context: context,
                                           headers: [("Content-Range", "bytes */\(size)")])
            case .ignored:
                break
            }
        }
        headers.add(name: "Content-Length", value: String(range.count))
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method == .HEAD || range.isEmpty {
            close(fd)
        } else if range.count <= Self.inlineLimit, let content = Self.read(fd, range: range, allocator: context.channel.allocator) {
            // Small content goes in the same write as the head: one segment on the wire instead of a
            // write for the head and a sendfile(2) for the body.
            close(fd)
            context.write(wrapOutboundOut(.body(.byteBuffer(content))), promise: nil)
        } else {
            let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: fd)
            let region = FileRegion(fileHandle: handle, readerIndex: range.lowerBound, endIndex: range.upperBound)
            context.write(wrapOutboundOut(.body(.fileRegion(region)))).whenComplete { _ in
                try? handle.close()
            }
        }
        SimpleResponse.end(request: request, keepAlive: keepAlive, context: context)
    }

    /// Content up to this size is read into memory and sent with the head; larger goes by sendfile(2).
    static let inlineLimit = 64 * 1024

    /// Reads `range` of a (page-cached, local) file; nil if it came up short, and sendfile is used instead.
    private static func read(_ fd: Int32, range: Range<Int>, allocator: ByteBufferAllocator) -> ByteBuffer? {
        var buffer = allocator.buffer(capacity: range.count)
        let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: range.count) { bytes in
            max(0, pread(fd, bytes.baseAddress, range.count, off_t(range.lowerBound)))
        }
        return count == range.count ? buffer : nil
    }
}

/// The file's validators and the conditional-request rules of RFC 9110 §13.
struct Validators {
    var size: Int
    var modifiedSeconds: Int
    var modifiedNanoseconds: Int

    /// A strong entity tag from the modification time (to the nanosecond) and the size, as nginx does.
    var etag: String { "\"\(String(modifiedSeconds, radix: 16))\(String(modifiedNanoseconds, radix: 16))-\(String(size, radix: 16))\"" }

    /// `If-None-Match` (weak comparison) decides when present; otherwise `If-Modified-Since`.
    func notModified(_ headers: HTTPHeaders) -> Bool {
        let inm = headers[canonicalForm: "If-None-Match"]
        if !inm.isEmpty {
            return inm.contains { tag in tag == "*" || Self.opaque(String(tag)) == Self.opaque(etag) }
        }
        if let since = headers.first(name: "If-Modified-Since"), let date = HTTPDate.parse(since) {
            return modifiedSeconds <= date
        }
        return false
    }

    /// `If-Range`: the range is served only if the validator still matches (strong comparison for tags).
    func rangeApplies(_ headers: HTTPHeaders) -> Bool {
        guard let condition = headers.first(name: "If-Range") else { return true }
        if condition.hasPrefix("\"") { return condition == etag }
        if let date = HTTPDate.parse(condition) { return date == modifiedSeconds }
        return false
    }

    private static func opaque(_ tag: String) -> String {
        tag.hasPrefix("W/") ? String(tag.dropFirst(2)) : tag
    }
}

/// A single `Range: bytes=…` (RFC 9110 §14.1.2). Several ranges are answered with the whole file.
enum ByteRange: Equatable {
    case satisfiable(Range<Int>)
    case unsatisfiable
    case ignored

    static func parse(_ header: String, size: Int) -> ByteRange {
        guard header.lowercased().hasPrefix("bytes=") else { return .ignored }
        let spec = header.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(",") else { return .ignored }
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard parts.count == 2 else { return .ignored }
        let digits: (String) -> Bool = { !$0.isEmpty && $0.count <= 18 && $0.allSatisfy(\.isASCIIDigit) }
        if parts[0].isEmpty {
            // A suffix range: the last N bytes.
            guard digits(parts[1]), let length = Int(parts[1]) else { return .ignored }
            guard length > 0, size > 0 else { return .unsatisfiable }
            return .satisfiable(max(0, size - length)..<size)
        }
        guard digits(parts[0]), let first = Int(parts[0]) else { return .ignored }
        guard first < size else { return .unsatisfiable }
        if parts[1].isEmpty { return .satisfiable(first..<size) }
        guard digits(parts[1]), let last = Int(parts[1]), last >= first else { return .ignored }
        return .satisfiable(first..<min(last + 1, size))
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

/// HTTP dates (RFC 9110 §5.6.7): IMF-fixdate out; IMF-fixdate, RFC 850 and asctime in.
enum HTTPDate {
    /// RFC 9110 §6.6.1: an origin server with a clock sends `Date`; formatted once a second per connection.
    struct Cache {
        private var second = 0
        private var text = ""

        mutating func now() -> String {
            let current = time(nil)
            if current != second {
                second = current
                text = HTTPDate.format(seconds: current)
            }
            return text
        }
    }

    static func format(seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    /// Seconds since the epoch, or nil for a malformed date (which is then ignored, as RFC 9110 says).
    static func parse(_ text: String) -> Int? {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        var day: Int?, month: Int?, year: Int?, clock: [Int]?
        switch words.count {
        case 5 where words[4] == "GMT":
            if words[1].contains("-") {
                // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
                let date = words[1].split(separator: "-").map(String.init)
                guard date.count == 3, let shortYear = Int(date[2]) else { return nil }
                day = Int(date[0]); month = months.firstIndex(of: date[1].lowercased()); year = shortYear < 70 ? 2000 + shortYear : 1900 + shortYear
                clock = words[2].split(separator: ":").compactMap { Int($0) }
            } else {
                return nil
            }
        case 6 where words[5] == "GMT":
            // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
            day = Int(words[1]); month = months.firstIndex(of: words[2].lowercased()); year = Int(words[3])
            clock = words[4].split(separator: ":").compactMap { Int($0) }
        case 5:
            // asctime: Sun Nov  6 08:49:37 1994
            month = months.firstIndex(of: words[1].lowercased()); day = Int(words[2]); year = Int(words[4])
            clock = words[3].split(separator: ":").compactMap { Int($0) }
        default:
            return nil
        }
        guard let day, let month, let year, let clock, clock.count == 3, (1...31).contains(day),
              (0...23).contains(clock[0]), (0...59).contains(clock[1]), (0...60).contains(clock[2]) else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(clock[0])
        parts.tm_min = Int32(clock[1])
        parts.tm_sec = Int32(clock[2])
        return Int(timegm(&parts))
    }
}

/// Content types by file extension; anything else is application/octet-stream.
enum MediaType {
    static let byExtension: [String: String] = [
        "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
        "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8",
        "json": "application/json", "txt": "text/plain; charset=utf-8", "xml": "application/xml",
        "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
        "webp": "image/webp", "ico": "image/vnd.microsoft.icon", "avif": "image/avif", "bmp": "image/bmp",
        "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf",
        "pdf": "application/pdf", "zip": "application/zip", "gz": "application/gzip", "tar": "application/x-tar",
        "wasm": "application/wasm", "map": "application/json", "webmanifest": "application/manifest+json",
        "mp4": "video/mp4", "webm": "video/webm", "mp3": "audio/mpeg", "ogg": "audio/ogg", "wav": "audio/wav",
        "csv": "text/csv; charset=utf-8", "md": "text/markdown; charset=utf-8", "atom": "application/atom+xml",
        "rss": "application/rss+xml",
    ]

    static func forPath(_ path: String) -> String {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return "application/octet-stream" }
        return byExtension[path[path.index(after: dot)...].lowercased()] ?? "application/octet-stream"
    }
}
