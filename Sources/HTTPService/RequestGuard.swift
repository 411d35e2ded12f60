import NIOCore
import NIOHTTP1

/// Checks each request before the file handler answers it: the method (405 with `Allow`), the request
/// line (414) and header block (431) limits, and the body, which a static server never needs: it is read
/// and discarded up to `http.max-body-size`, past which the answer is 413 and the connection closes.
/// A request the parser rejects gets 431 when its header block is over the parser's limits, 400 for
/// anything else malformed (``parserRefusal(_:)``); then the connection closes.
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

    private let settings: HTTPSettings
    /// The request being checked, and whether it was refused (its remaining parts are then dropped).
    private var current: (head: HTTPRequestHead, refused: Bool, bodyBytes: Int)?

    init(settings: HTTPSettings) { self.settings = settings }

    /// A request begins: the refusal to answer it with, or nil when it may go on.
    mutating func begin(_ head: HTTPRequestHead) -> Refusal? {
        let refusal = check(head)
        current = (head, refusal != nil, 0)
        return refusal
    }

    /// Body octets arrived: past the limit, the request to answer with 413 (once); the body itself is
    /// dropped, nothing after the guard reads one.
    mutating func received(bodyBytes count: Int) -> (HTTPRequestHead, Refusal)? {
        guard var request = current, !request.refused else { return nil }
        let (total, overflow) = request.bodyBytes.addingReportingOverflow(count)
        request.bodyBytes = total
        guard !overflow, total <= settings.maxBodySize else {
            request.refused = true
            current = request
            return (request.head, Refusal(status: .payloadTooLarge, close: true))
        }
        current = request
        return nil
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
        return parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
    }

    private func check(_ head: HTTPRequestHead) -> Refusal? {
        if head.uri.utf8.count > settings.maxRequestLine {
            return Refusal(status: .uriTooLong, close: true)
        }
        let headerBytes = head.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        if headerBytes > settings.maxHeaderSize {
            return Refusal(status: .requestHeaderFieldsTooLarge, close: true)
        }
        if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > settings.maxBodySize {
            return Refusal(status: .payloadTooLarge, close: true)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return Refusal(status: .methodNotAllowed, headers: [("Allow", "GET, HEAD")], close: false)
        }
        return nil
    }
}
