import NIOCore
import NIOHTTP1

/// Checks each request before it reaches the file handler: the method (405 with `Allow`), the request
/// line (414) and header block (431) limits, and the body, which a static server never needs: it is read
/// and discarded up to `http.max-body-size`, past which the answer is 413 and the connection closes.
///
/// It also answers requests the parser rejects: 431 when the header block is over the parser's limits,
/// 400 for anything else malformed; then the connection closes (the decoder cannot resynchronise). It sits
/// above NIO's `HTTPServerPipelineHandler`, which holds a parser error back while a response is still
/// going out and passes it on only when none is, so that answer never lands inside another response.
/// For the same reason it is the one that tells the access log of each request.
final class RequestGuard: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    private let settings: HTTPSettings
    private let pacer: ResponsePacer
    private let accessLog: AccessLogRecorder?
    /// The request being checked, and whether it was refused (its remaining parts are then dropped).
    private var current: (head: HTTPRequestHead, refused: Bool, bodyBytes: Int)?

    init(settings: HTTPSettings, pacer: ResponsePacer, accessLog: AccessLogRecorder?) {
        self.settings = settings
        self.pacer = pacer
        self.accessLog = accessLog
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            accessLog?.requestBegan(head)
            if let refusal = check(head) {
                current = (head, true, 0)
                SimpleResponse.send(refusal.status, to: head, context: context, headers: refusal.headers, close: refusal.close,
                                    pacer: pacer)
                return
            }
            current = (head, false, 0)
            context.fireChannelRead(data)
        case .body(let body):
            guard var request = current, !request.refused else { return }
            request.bodyBytes += body.readableBytes
            current = request
            if request.bodyBytes > settings.maxBodySize {
                current?.refused = true
                SimpleResponse.send(.payloadTooLarge, to: request.head, context: context, close: true, pacer: pacer)
            }
            // Within the limit the body is dropped here: nothing after this handler reads one.
        case .end:
            guard let request = current else { return }
            current = nil
            if !request.refused { context.fireChannelRead(data) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
        SimpleResponse.sendAndClose(status, context: context)
    }

    private func check(_ head: HTTPRequestHead) -> (status: HTTPResponseStatus, headers: [(String, String)], close: Bool)? {
        if head.uri.utf8.count > settings.maxRequestLine {
            return (.uriTooLong, [], true)
        }
        let headerBytes = head.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        if headerBytes > settings.maxHeaderSize {
            return (.requestHeaderFieldsTooLarge, [], true)
        }
        if let length = head.headers.first(name: "Content-Length").flatMap(Int.init), length > settings.maxBodySize {
            return (.payloadTooLarge, [], true)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return (.methodNotAllowed, [("Allow", "GET, HEAD")], false)
        }
        return nil
    }
}
