import NIOCore
import NIOHTTP1

/// Writes a complete response with a small text body (errors, redirects, 304), honouring keep-alive.
enum SimpleResponse {
    static func send(_ status: HTTPResponseStatus, to request: HTTPRequestHead, context: ChannelHandlerContext,
                     headers extra: [(String, String)] = [], close: Bool = false, pacer: ResponsePacer) {
        // A HEAD response carries the headers a GET would have, without the content (RFC 9110 §9.3.2).
        let text = "\(status.code) \(status.reasonPhrase)\n"
        let hasBody = status.mayHaveResponseBody && request.method != .HEAD
        var headers = HTTPHeaders(extra)
        headers.add(name: "Server", value: "inetinfo")
        if status.mayHaveResponseBody {
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            headers.add(name: "Content-Length", value: String(text.utf8.count))
        }
        let keepAlive = request.isKeepAlive && !close
        if !keepAlive {
            headers.replaceOrAdd(name: "Connection", value: "close")
        } else if request.version == .http1_0 {
            headers.replaceOrAdd(name: "Connection", value: "keep-alive")
        }
        let head = HTTPServerResponsePart.head(HTTPResponseHead(version: request.version, status: status, headers: headers))
        let last = lastPartPromise(context)
        if hasBody {
            context.write(NIOAny(head), promise: nil)
            context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: text)))), promise: last)
        } else {
            context.write(NIOAny(head), promise: last)
        }
        end(request: request, keepAlive: keepAlive, after: last, pacer: pacer, context: context)
    }

    /// Answers what is no request NIO's pipelining handler knows of (a malformed one, a head that never
    /// completed) and closes the connection once the answer is out.
    static func sendAndClose(_ status: HTTPResponseStatus, context: ChannelHandlerContext) {
        // A connection already closing (a graceful stop closed it, and the decoder reports the request it
        // cut short) gets nothing: NIO's pipelining handler refuses writes once it has closed.
        guard context.channel.isActive else { return }
        let text = "\(status.code) \(status.reasonPhrase)\n"
        let headers = HTTPHeaders([("Connection", "close"), ("Content-Length", String(text.utf8.count)),
                                   ("Content-Type", "text/plain; charset=utf-8"), ("Server", "inetinfo")])
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    /// The promise to write a response's last part with: nil while the channel is writable (the response
    /// ends at once, and the hot path allocates nothing), else one that ``end(request:keepAlive:after:context:)``
    /// waits for.
    static func lastPartPromise(_ context: ChannelHandlerContext) -> EventLoopPromise<Void>? {
        context.channel.isWritable ? nil : context.eventLoop.makePromise()
    }

    /// Ends a response whose last part was written with `last` (see ``lastPartPromise(_:)``): at once, or
    /// once that part has gone out; or in a task of its own when the connection has ended its share of
    /// responses for this turn of the event loop (``ResponsePacer``).
    ///
    /// Until a response ends, NIO's `HTTPServerPipelineHandler` holds pipelined requests back and stops
    /// reading; so a client that sends requests without reading the answers (pipelined `HEAD`s, 404s,
    /// 304s) gets at most the channel's high-water mark of responses queued (and one more), not one per
    /// request sent. The end is written from a fresh event loop task, not from the completion: ending a
    /// response makes NIO deliver the next pipelined request at once, and a write that completes during a
    /// flush would otherwise nest one response inside the other, a stack frame per request. A failed
    /// write means the connection is gone: close it rather than answer the next request.
    static func end(request: HTTPRequestHead, keepAlive: Bool, after last: EventLoopPromise<Void>?, pacer: ResponsePacer,
                    context: ChannelHandlerContext) {
        guard let last else {
            if pacer.mayEndNow() { return end(request: request, keepAlive: keepAlive, context: context) }
            context.flush()
            let ending = NIOLoopBound((context, pacer), eventLoop: context.eventLoop)
            return context.eventLoop.execute {
                ending.value.1.runBegins()
                end(request: request, keepAlive: keepAlive, context: ending.value.0)
            }
        }
        let ending = NIOLoopBound((context, pacer), eventLoop: context.eventLoop)
        context.flush()
        last.futureResult.whenComplete { result in
            let context = ending.value.0
            guard case .success = result else { return context.close(promise: nil) }
            context.eventLoop.execute {
                ending.value.1.runBegins()
                end(request: request, keepAlive: keepAlive, context: ending.value.0)
            }
        }
    }

    /// Ends a response; closes the connection after it when keep-alive is off.
    static func end(request: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext) {
        guard !keepAlive else { return context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)), promise: nil) }
        let channel = context.channel
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

extension HTTPResponseStatus {
    /// RFC 9110 §6.4.1: 1xx, 204 and 304 responses have no content.
    var mayHaveResponseBody: Bool {
        !(code < 200 || code == 204 || code == 304)
    }
}
