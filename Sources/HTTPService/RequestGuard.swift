import NIOCore
import NIOHTTP1

/// Checks each request before the file handler answers it: the method (405 with `Allow`), the request
/// line (414) and header block (431) limits, and the body, which a static server never needs: it is read
/// and discarded up to `http.max-body-size`, past which the answer is 413 and the connection closes.
/// A request the parser rejects gets 431 when its header block is over the parser's limits, 501 for a
/// method it does not know, 505 for a version other than HTTP/1.x, 400 for anything else malformed
/// (``parserRefusal(_:)``); then the connection closes. An HTTP/1.1 request without exactly one valid
/// `Host` is 400 too, and a target in absolute form is served as its path.
///
/// A state machine without I/O, driven by ``StaticFileHandler`` with the request parts in order, behind
/// NIO's pipelining handler (which holds a parser error back while the previous request's response is
/// still going out, so that the 400 does not land inside it). Not a handler of its own: that was a hop and
/// an `NIOAny` cast for every request part.
struct RequestGuard {
    struct Refusal {
        var status: HTTPResponseStatus
        var headers: [(String, String)] = []
        /// The connection closes after the answer: the rest of the request cannot be trusted or is not read.
        var close: Bool
    }

    /// The request being checked.
    private struct Request {
        var head: HTTPRequestHead
        /// Answered with a refusal: its remaining parts are dropped.
        var refused: Bool
        var bodyBytes = 0
        /// Its body went past the limit (answered with 413, or the connection closed).
        var overLimit = false
    }

    private let settings: HTTPSettings
    private var current: Request?

    init(settings: HTTPSettings) { self.settings = settings }

    /// What to do with a request whose head has arrived.
    enum Verdict {
        /// Answer it once it is complete (its body, if any, read and discarded).
        case proceed
        case refuse(Refusal)
        /// Answer it now, this head (which closes the connection), without waiting for its body: the
        /// client waits for a `100 Continue` before it sends one (`Expect: 100-continue`), and a final
        /// answer at once is what RFC 9110 §10.1.1 allows instead; a static file needs no body.
        case answerNow(HTTPRequestHead)
    }

    /// A request begins.
    mutating func begin(_ head: HTTPRequestHead) -> Verdict {
        var head = head
        let fields = HeadFields(head.headers)
        let refusal = check(head, fields)
        // RFC 9110 §7.8: a server may ignore `Upgrade` and answer in HTTP/1.1, as this one does. But NIO's
        // parser reads nothing after a request that asks for an upgrade (nor after a CONNECT): it leaves the
        // rest of the connection to an upgrader. So the answer closes the connection, instead of leaving
        // the client waiting for answers to requests that would never be read. (Any `Upgrade` counts, with
        // or without `Connection: upgrade`, which llhttp also wants: one connection closed too many costs
        // nothing.) RFC 9112 §6.1: an HTTP/1.0 message with `Transfer-Encoding` has faulty framing: close
        // after it too.
        let endsConnection = head.method == .CONNECT || fields.upgrade || (head.version == .http1_0 && fields.transferEncoding)
        if endsConnection { head.headers.replaceOrAdd(name: "Connection", value: "close") }
        // Assigned only when it changes: setting a field of the head copies its storage.
        if let target = Self.originForm(head.uri), target.utf8.count != head.uri.utf8.count { head.uri = target }
        // RFC 9110 §10.1.1: HTTP/1.1 with `Expect: 100-continue` and content to send (HTTP/1.0's expectation
        // is ignored, as is one without content): the client holds the content back.
        let awaitsContinue = fields.expectsContinue && head.version.minor >= 1 && (fields.contentLength ?? 0 > 0 || fields.transferEncoding)
        if var refusal {
            // A refusal of such a request closes too: the content the client holds back (or framed so that
            // it cannot be trusted) must not be read as the next request, nor waited for.
            refusal.close = refusal.close || endsConnection || awaitsContinue
            current = Request(head: head, refused: true)
            return .refuse(refusal)
        }
        if awaitsContinue {
            head.headers.replaceOrAdd(name: "Connection", value: "close")
            // Answered: what follows of it is dropped (and its body bounded as a refused one's).
            current = Request(head: head, refused: true)
            return .answerNow(head)
        }
        current = Request(head: head, refused: false)
        return .proceed
    }

    /// What the guard needs of a head's fields, in one pass: every `HTTPHeaders` lookup is a pass of its
    /// own with a case-insensitive comparison per field, and this runs for every request.
    struct HeadFields {
        /// The octets of the header block, as the parser counted them (`name: value\r\n`).
        var octets = 0
        var contentLength: Int?
        var hosts = 0
        var host = ""
        var upgrade = false
        var transferEncoding = false
        var expectsContinue = false
        /// An expectation other than 100-continue.
        var expectsOther = false

        init(_ headers: HTTPHeaders) {
            for (name, value) in headers {
                octets += name.utf8.count + value.utf8.count + 4
                switch name.utf8.count {
                case 4 where Self.named(name.utf8, "host"):
                    hosts += 1
                    host = value
                case 6 where Self.named(name.utf8, "expect"):
                    for member in value.utf8.split(separator: UInt8(ascii: ",")) {
                        let trimmed = member.drop { $0 == 0x20 || $0 == 0x09 }.reversed().drop { $0 == 0x20 || $0 == 0x09 }.reversed()
                        if Self.named(trimmed, "100-continue") { expectsContinue = true } else { expectsOther = true }
                    }
                case 7 where Self.named(name.utf8, "upgrade"):
                    upgrade = true
                case 14 where Self.named(name.utf8, "content-length"):
                    if contentLength == nil { contentLength = Int(value) ?? 0 }
                case 17 where Self.named(name.utf8, "transfer-encoding"):
                    transferEncoding = true
                default:
                    break
                }
            }
        }

        /// ASCII case-insensitive equality with a lower-case name.
        static func named(_ bytes: some Sequence<UInt8>, _ lowercased: String) -> Bool {
            bytes.elementsEqual(lowercased.utf8) { ($0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0) == $1 }
        }
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host` field (HTTP/1.0 at most one), and its value
    /// is `uri-host [ ":" port ]` — possibly empty — so a byte outside the characters of an authority
    /// (unreserved, percent-encoded, sub-delims, `:`, `[`, `]`) makes it invalid. Otherwise: 400.
    static func hasValidHost(_ fields: HeadFields, version: HTTPVersion) -> Bool {
        guard fields.hosts == 1 else { return fields.hosts == 0 && version == .http1_0 }
        return authorityOctets.withUnsafeBufferPointer { table in
            fields.host.utf8.withContiguousStorageIfAvailable { $0.allSatisfy { table[Int($0)] } }
                ?? fields.host.utf8.allSatisfy { table[Int($0)] }
        }
    }

    /// The octets of `uri-host [ ":" port ]` (RFC 3986: unreserved, pct-encoded, sub-delims, and the `:`
    /// and brackets of a port and an IP literal), as a table: this runs for every request.
    private static let authorityOctets: [Bool] = (0...255).map { byte in
        let octet = UInt8(byte)
        return (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(octet) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(octet)
            || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(octet) || Array("-._~%!$&'()*+,;=:[]".utf8).contains(octet)
    }

    /// The target in origin form (`/path?query`): an absolute-form target (RFC 9112 §3.2.2, which a server
    /// must accept: `http://host/path?query`, scheme in any case) loses its scheme and authority, which
    /// name no file here; nil when its authority is not followed by a path, a query or nothing.
    static func originForm(_ target: String) -> String? {
        // The origin form, as nearly every request has it, costs one byte's look.
        guard let first = target.utf8.first, first != UInt8(ascii: "/") else { return target }
        for scheme in ["http://", "https://"] where HeadFields.named(target.utf8.prefix(scheme.utf8.count), scheme) {
            let rest = target.utf8.dropFirst(scheme.utf8.count)
            let end = rest.firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") } ?? rest.endIndex
            // `http://` with no host is no URI (RFC 3986 §3.2.2 for http: a host is required).
            guard end != rest.startIndex else { return nil }
            let tail = String(target[end...])
            return tail.hasPrefix("/") ? tail : "/" + tail
        }
        // Anything else (an asterisk, an authority, a relative path) is answered as it is: 404 or 405.
        return target
    }

    /// What to do about the body octets received so far.
    enum BodyVerdict {
        case discard
        /// Past the limit: answer the request with 413 and close.
        case refuse(HTTPRequestHead, Refusal)
        /// Past the limit, in a request already answered (refused at its head): close the connection.
        case close
    }

    /// Body octets arrived. The body itself is dropped (nothing after the guard reads one), up to
    /// `http.max-body-size` — in a refused request too, whose answer is already out: a client may send a
    /// small body after a refused method and go on, but not an endless one.
    mutating func received(bodyBytes count: Int) -> BodyVerdict {
        guard var request = current, !request.overLimit else { return .discard }
        let (total, overflow) = request.bodyBytes.addingReportingOverflow(count)
        guard overflow || total > settings.maxBodySize else {
            request.bodyBytes = total
            current = request
            return .discard
        }
        request.overLimit = true
        defer { current = request }
        if request.refused { return .close }
        request.refused = true
        return .refuse(request.head, Refusal(status: .payloadTooLarge, close: true))
    }

    /// The request is complete: its head, to be answered, or nil if it was refused (or none began).
    mutating func end() -> HTTPRequestHead? {
        guard let request = current else { return nil }
        current = nil
        return request.refused ? nil : request.head
    }

    /// The answer to an error of NIO's HTTP parser; nil for an error that is not the parser's.
    static func parserRefusal(_ error: any Error) -> HTTPResponseStatus? {
        guard let parserError = error as? HTTPParserError else { return nil }
        switch parserError {
        case .headerOverflow: return .requestHeaderFieldsTooLarge
        // RFC 9110 §9.1: a method the server does not know (`FOO`, or `get`: methods are case-sensitive).
        case .invalidMethod: return .notImplemented
        // RFC 9110 §15.6.6: a version this server does not speak (`HTTP/2.0` in HTTP/1 syntax).
        case .invalidVersion: return .httpVersionNotSupported
        default: return .badRequest
        }
    }

    private func check(_ head: HTTPRequestHead, _ fields: HeadFields) -> Refusal? {
        if head.uri.utf8.count > settings.maxRequestLine {
            return Refusal(status: .uriTooLong, close: true)
        }
        if fields.octets > settings.maxHeaderSize {
            return Refusal(status: .requestHeaderFieldsTooLarge, close: true)
        }
        if let length = fields.contentLength, length > settings.maxBodySize {
            return Refusal(status: .payloadTooLarge, close: true)
        }
        guard Self.hasValidHost(fields, version: head.version), Self.originForm(head.uri) != nil else {
            return Refusal(status: .badRequest, close: true)
        }
        // RFC 9110 §10.1.1: 100-continue is the only expectation there is; any other gets 417 (HTTP/1.1 only:
        // an HTTP/1.0 server would not know the field).
        if fields.expectsOther, head.version.minor >= 1 {
            return Refusal(status: .expectationFailed, close: true)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return Refusal(status: .methodNotAllowed, headers: [("Allow", "GET, HEAD")], close: head.method == .CONNECT || fields.upgrade)
        }
        return nil
    }
}
