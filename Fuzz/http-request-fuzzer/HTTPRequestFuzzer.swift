// libFuzzer target over the HTTP service's real connection pipeline: the handlers HTTPService installs
// (HTTPService.addHandlers), on an EmbeddedChannel, over a small web root made once per process. Any byte
// sequence, cut into reads at positions chosen by the input, must never trap; every response the server
// writes must start with `HTTP/1.`, be framed by Content-Length, and no byte from outside the web root
// may ever be sent. The connection limiter must be back at zero once each connection is closed.
//
// Input: byte 0 is a set of flags (below); the rest is the client's byte stream. The pair 0xFE 0xFE in it
// is not sent: the client pauses there until every timer of the connection fires (keep-alive and head
// timeouts).
//
// Fuzz:   scripts/fuzz.sh http-request-fuzzer [SECONDS]   (builds with -DFUZZING, --sanitize fuzzer,address)
// Replay: swift run http-request-fuzzer FILE…              (a normal build: runs the same check on each file)
import Foundation
import NIOCore
import NIOEmbedded
@_spi(Fuzzing) import HTTPService

// MARK: A monotonic clock the harness can move

// RequestTimeoutHandler takes its deadlines from NIODeadline.now() (CLOCK_MONOTONIC), not from the event
// loop's clock, so the EmbeddedEventLoop's virtual time alone cannot make its timers fire. This process
// overrides clock_gettime(2) so that CLOCK_MONOTONIC runs ahead by an offset the harness moves forward.
// (libFuzzer's own time limits use CLOCK_REALTIME, which is left alone.)
nonisolated(unsafe) var monotonicOffsetNanoseconds: Int = 0
private typealias ClockGettime = @convention(c) (clockid_t, UnsafeMutablePointer<timespec>?) -> CInt
nonisolated(unsafe) private var realClockGettime: ClockGettime?

@_cdecl("clock_gettime")
public func fuzzClockGettime(_ clock: clockid_t, _ result: UnsafeMutablePointer<timespec>?) -> CInt {
    if realClockGettime == nil {
        // RTLD_NEXT: the C library's clock_gettime, past this executable's.
        realClockGettime = unsafeBitCast(dlsym(UnsafeMutableRawPointer(bitPattern: -1), "clock_gettime"), to: ClockGettime.self)
    }
    let status = realClockGettime!(clock, result)
    if status == 0, clock == CLOCK_MONOTONIC, monotonicOffsetNanoseconds != 0, let result {
        let total = Int(result.pointee.tv_sec) * 1_000_000_000 + Int(result.pointee.tv_nsec) + monotonicOffsetNanoseconds
        result.pointee.tv_sec = total / 1_000_000_000
        result.pointee.tv_nsec = total % 1_000_000_000
    }
    return status
}

// MARK: The web root

/// Files are dated Sun, 06 Nov 1994 08:49:37 GMT (the RFC's example date), so that seeds can carry
/// matching `If-Modified-Since`, `If-Range` and `ETag` values: a 6-byte file's tag is "2ebc98a10-6".
let fixedModificationTime = 784_111_777
let secret = "OUTSIDE-THE-WEB-ROOT"

struct WebRoot {
    let base: String
    let root: String

    init() {
        var template = Array("/tmp/http-request-fuzzer.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("mkdtemp: \(String(cString: strerror(errno)))") }
        base = String(cString: made)
        root = base + "/www"
        let files: [(String, [UInt8])] = [
            ("www/index.html", Array("<html><body>index</body></html>\n".utf8)),
            ("www/a.txt", Array("hello\n".utf8)),
            ("www/empty.txt", []),
            ("www/style.css", Array("body { color: black }\n".utf8)),
            ("www/sp ace.txt", Array("space\n".utf8)),
            ("www/\u{fc}ber.txt", Array("umlaut\n".utf8)),
            ("www/big.bin", (0..<100 * 1024).map { UInt8(truncatingIfNeeded: $0 % 251) }),
            ("www/medium.bin", (0..<20_000).map { UInt8(truncatingIfNeeded: $0 % 241) }),
            ("www/sub/index.html", Array("<p>sub</p>\n".utf8)),
            ("www/sub/page.html", Array("<p>page</p>\n".utf8)),
            ("www/noindex/file.js", Array("let x = 1\n".utf8)),
            ("outside/secret.txt", Array("\(secret)\n".utf8)),
            ("outside/index.html", Array("\(secret) index\n".utf8)),
        ]
        for (path, content) in files {
            let url = URL(fileURLWithPath: base + "/" + path)
            try! FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try! Data(content).write(to: url)
        }
        for (link, target) in [("www/link-out.txt", "../outside/secret.txt"), ("www/dir-out", "../outside"),
                               ("www/link-in.txt", "a.txt"), ("www/sub/up", ".."), ("www/dangling", "nowhere")] {
            precondition(symlink(target, base + "/" + link) == 0, "symlink \(link)")
        }
        for (path, _) in files {
            var times = [timeval(tv_sec: fixedModificationTime, tv_usec: 0), timeval(tv_sec: fixedModificationTime, tv_usec: 0)]
            utimes(base + "/" + path, &times)
        }
    }
}

/// Made once per process, as the service makes them once per instance: the web root, the settings, the
/// connection limiter and the file cache (which admits files only once their change time is 2 s old).
let site: HTTPFuzzing.Site = {
    let webRoot = WebRoot()
    atexit { if let base = webRootBase { try? FileManager.default.removeItem(atPath: base) } }
    webRootBase = webRoot.base
    // Short timeouts: the harness moves the clock past them.
    let settings = try! HTTPFuzzing.makeSettings(webRoot: webRoot.root, options: [
        "access-log": "off", "keepalive-timeout": "2", "header-timeout": "1", "max-body-size": "100",
        "max-request-line": "1024", "max-header-size": "2048", "max-headers": "20",
    ])
    return try! HTTPFuzzing.Site(settings: settings, accessLog: true)
}()
nonisolated(unsafe) var webRootBase: String?

// MARK: What the client sees

/// FUZZ_VERBOSE=1 prints each response head (for replaying an input by hand).
let verbose = getenv("FUZZ_VERBOSE") != nil

/// Follows the bytes the server writes and checks that they are a sequence of well-framed responses.
struct ResponseStream {
    private var pending: [UInt8] = []
    /// Content bytes of the current response still to come.
    private var contentLeft = 0
    /// The current response's content may be absent altogether (the answer to HEAD).
    private var mayBeHeadless = false
    private(set) var responses = 0
    private static let prefix = Array("HTTP/1.".utf8)
    private static let secretBytes = Array(secret.utf8)

    mutating func received(_ data: IOData) {
        switch data {
        case .byteBuffer(let buffer):
            let bytes = Array(buffer.readableBytesView)
            precondition(!contains(bytes, Self.secretBytes), "a file from outside the web root was sent")
            pending += bytes
            parse(final: false)
        case .fileRegion(let region):
            parse(final: false)
            if mayBeHeadless, contentLeft > 0 { mayBeHeadless = false }
            precondition(pending.isEmpty && region.readableBytes <= contentLeft,
                         "a file region of \(region.readableBytes) bytes outside a response's content (\(contentLeft) left)")
            contentLeft -= region.readableBytes
        }
    }

    /// The connection is closed: what was sent must end at a response's end.
    mutating func closed() {
        parse(final: true)
        precondition(pending.isEmpty, "the connection closed inside a response head: \(String(decoding: pending, as: UTF8.self))")
        precondition(contentLeft == 0 || mayBeHeadless, "the connection closed \(contentLeft) bytes before a response's end")
    }

    private mutating func parse(final: Bool) {
        while !pending.isEmpty {
            if contentLeft > 0 {
                if mayBeHeadless {
                    // A HEAD response has Content-Length and no content: the next response follows at once.
                    // (No file of the web root starts with "HTTP/1.".)
                    if pending.starts(with: Self.prefix) {
                        contentLeft = 0
                        mayBeHeadless = false
                        continue
                    }
                    if pending.count < Self.prefix.count, Self.prefix.starts(with: pending), !final { return }
                }
                let taken = min(contentLeft, pending.count)
                pending.removeFirst(taken)
                contentLeft -= taken
                mayBeHeadless = false
                continue
            }
            let count = min(pending.count, Self.prefix.count)
            precondition(pending[..<count].elementsEqual(Self.prefix[..<count]),
                         "a response does not start with HTTP/1.: \(String(decoding: pending.prefix(80), as: UTF8.self))")
            guard let end = firstIndex(of: [13, 10, 13, 10], in: pending) else {
                precondition(pending.count < 64 * 1024, "a response head without an end")
                return
            }
            let head = String(decoding: pending[..<end], as: UTF8.self)
            pending.removeFirst(end + 4)
            responses += 1
            if verbose { print("response \(responses):\n\(head)\n") }
            check(head)
        }
    }

    private mutating func check(_ head: String) {
        let lines = head.components(separatedBy: "\r\n")
        let statusWords = lines[0].split(separator: " ", maxSplits: 2)
        precondition(statusWords.count >= 2 && (statusWords[0] == "HTTP/1.1" || statusWords[0] == "HTTP/1.0"),
                     "bad status line: \(lines[0])")
        guard let status = Int(statusWords[1]), (100...599).contains(status) else { preconditionFailure("bad status: \(lines[0])") }
        var fields: [String: [String]] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { preconditionFailure("bad header line: \(line)") }
            let name = line[..<colon].lowercased()
            precondition(!name.isEmpty && !name.contains(" "), "bad header name: \(line)")
            precondition(!line.contains("\r") && !line.contains("\n"), "a header field with CR or LF: \(line)")
            fields[name, default: []].append(line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        precondition(fields["date"]?.count == 1, "no single Date: \(head)")
        let mayHaveContent = !(status < 200 || status == 204 || status == 304)
        guard mayHaveContent else {
            precondition(fields["content-length"] == nil || status == 304, "Content-Length on a \(status): \(head)")
            return
        }
        guard let lengths = fields["content-length"], lengths.count == 1, let length = Int(lengths[0]), length >= 0 else {
            preconditionFailure("a \(status) response without a single valid Content-Length: \(head)")
        }
        if status == 206 {
            // bytes FIRST-LAST/SIZE, and the length is LAST - FIRST + 1.
            guard let range = fields["content-range"]?.first, range.hasPrefix("bytes "),
                  case let parts = range.dropFirst(6).split(whereSeparator: { $0 == "-" || $0 == "/" }).compactMap({ Int($0) }),
                  parts.count == 3, parts[0] <= parts[1], parts[1] < parts[2], parts[1] - parts[0] + 1 == length else {
                preconditionFailure("a 206 with a bad Content-Range: \(head)")
            }
        }
        if status == 416 {
            precondition(fields["content-range"]?.first?.hasPrefix("bytes */") == true, "a 416 without Content-Range: \(head)")
        }
        contentLeft = length
        mayBeHeadless = length > 0
    }

    private func firstIndex(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return start }
        }
        return nil
    }

    private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool { firstIndex(of: needle, in: haystack) != nil }
}

// MARK: One connection

let chunkSizes = [1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 64, 127, 256, 1024, 4096, 65536]

func exercise(_ data: UnsafeRawBufferPointer) {
    let site = site
    let flags = data.first ?? 0
    let chunkSize = chunkSizes[Int(flags & 0x0F)]
    let accessLog = flags & 0x10 != 0
    let idleAtEnd = flags & 0x20 != 0
    let unwritable = flags & 0x40 != 0
    let varyChunks = flags & 0x80 != 0

    let channel = EmbeddedChannel()
    let loop = channel.embeddedEventLoop
    try! site.makePipeline(channel: channel, accessLog: accessLog)
    channel.isWritable = !unwritable
    channel.remoteAddress = try! SocketAddress(ipAddress: "192.0.2.1", port: 40000)
    try! channel.connect(to: SocketAddress(ipAddress: "192.0.2.2", port: 80)).wait()

    var stream = ResponseStream()
    func drain() {
        do {
            while let part = try channel.readOutbound(as: IOData.self) { stream.received(part) }
        } catch {
            preconditionFailure("the server wrote something that is not bytes: \(error)")
        }
    }
    func fireTimers() {
        if verbose { print("(timers fire)") }
        // Past both timeouts (2 s and 1 s), then run what is due.
        monotonicOffsetNanoseconds += 3_000_000_000
        loop.advanceTime(to: .now())
        drain()
    }

    // The stream, with 0xFE 0xFE marking pauses.
    let payload = data.isEmpty ? UnsafeRawBufferPointer(rebasing: data[0..<0]) : UnsafeRawBufferPointer(rebasing: data[1...])
    var segmentStart = 0
    var index = 0
    var chunkNumber = 0
    func send(_ range: Range<Int>) {
        var offset = range.lowerBound
        while offset < range.upperBound, channel.isActive {
            var size = chunkSize
            if varyChunks {
                size = [chunkSize, 1, 2 * chunkSize + 1][chunkNumber % 3]
            }
            chunkNumber += 1
            let end = min(offset + size, range.upperBound)
            _ = try? channel.writeInbound(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: payload[offset..<end])))
            offset = end
            loop.run()
            drain()
        }
    }
    while index < payload.count {
        if index + 1 < payload.count, payload[index] == 0xFE, payload[index + 1] == 0xFE {
            send(segmentStart..<index)
            if channel.isActive { fireTimers() }
            index += 2
            segmentStart = index
        } else {
            index += 1
        }
    }
    send(segmentStart..<payload.count)
    if idleAtEnd, channel.isActive {
        fireTimers()
        fireTimers()
    }
    loop.run()
    drain()
    _ = try? channel.finish(acceptAlreadyClosed: true)
    drain()
    stream.closed()
    precondition(site.connections.count() == 0, "a closed connection still holds a slot: \(site.connections.count())")
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    exercise(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}
#else
@main
enum Replay {
    static func main() throws {
        for path in CommandLine.arguments.dropFirst() {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            data.withUnsafeBytes(exercise)
            print("ok \(path)")
        }
    }
}
#endif
