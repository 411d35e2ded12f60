import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Answers each request that its ``RequestGuard`` lets through (GET and HEAD) with files from the web root:
/// validators (`ETag`, `Last-Modified`), conditional requests (304), a single byte range (206, 416), and
/// the content: small files from memory in the same write as the head, larger ones as a zero-copy
/// `FileRegion`, which NIO sends with sendfile(2) as the socket drains. Paths already resolved are
/// looked up in the ``FileCache``. What the guard refuses it answers with the guard's status; it tells the
/// connection's access log of every request.
final class StaticFileHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let root: String
    private let cache: FileCache
    private let pacer: ResponsePacer
    /// Takes a cached file's encoded fields for the head of its 200.
    private let encoder: ResponseEncoder
    private let accessLog: AccessLogRecorder?
    private var requestGuard: RequestGuard
    /// A response that closes the connection has begun: requests pipelined behind it are not answered
    /// (NIO's pipelining handler would still hand them over, and their answers would race the close).
    private var closing = false

    init(settings: HTTPSettings, cache: FileCache, pacer: ResponsePacer, encoder: ResponseEncoder, accessLog: AccessLogRecorder?) {
        root = settings.webRoot
        requestGuard = RequestGuard(settings: settings)
        self.cache = cache
        self.pacer = pacer
        self.encoder = encoder
        self.accessLog = accessLog
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        switch unwrapInboundIn(data) {
        case .head(let head):
            accessLog?.requestBegan(head)
            switch requestGuard.begin(head) {
            case .proceed: break
            case .refuse(let refusal): send(refusal, to: head, context: context)
            case .answerNow(let head): respond(to: head, context: context)
            }
        case .body(let body):
            switch requestGuard.received(bodyBytes: body.readableBytes) {
            case .discard: break
            case .refuse(let head, let refusal): send(refusal, to: head, context: context)
            case .close: context.close(promise: nil)
            }
        case .end:
            if let head = requestGuard.end() { respond(to: head, context: context) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is ByteToMessageDecoderError.PayloadTooLargeError {
            // Input the parser no longer reads (after an upgrade request) piled up past the bound: the
            // answer to that request, if any, is on its way or cut; nothing else can be answered.
            closing = true
            return context.close(promise: nil)
        }
        guard let status = RequestGuard.parserRefusal(error) else { return context.fireErrorCaught(error) }
        // Behind a response that closes, a parser error (llhttp refuses any byte after `Connection: close`;
        // NIO's pipelining handler holds the error until that response ends) is not answered either, nor
        // is a second report of the same error.
        guard !closing else { return }
        closing = true
        SimpleResponse.sendAndClose(status, context: context)
    }

    private func send(_ refusal: RequestGuard.Refusal, to head: HTTPRequestHead, context: ChannelHandlerContext) {
        if refusal.close || !head.isKeepAlive { closing = true }
        SimpleResponse.send(refusal.status, to: head, context: context, headers: refusal.headers, close: refusal.close, pacer: pacer)
    }

    /// The file a request names, from the cache or resolved afresh, and its descriptor when the content
    /// must be read from it (-1 when the cached content serves).
    private enum Lookup {
        case file(FileCache.Entry, descriptor: Int32)
        case refused(HTTPResponseStatus, headers: [(String, String)])
    }

    private func lookup(_ target: String) -> Lookup {
        // A byte scan: Character-wise search showed up in profiles (grapheme breaking on every request).
        let key = target.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(target[..<$0]) } ?? target
        if let entry = cache.lookup(key) {
            if entry.content != nil { return .file(entry, descriptor: -1) }
            // Large content is read from the file: the descriptor must be the cached file still, or
            // the request is resolved again.
            if let (fd, info) = FileIdentity(device: entry.identity.device, inode: entry.identity.inode).open(entry.file) {
                if FileCache.Identity(info) == entry.identity { return .file(entry, descriptor: fd) }
                close(fd)
            }
        }
        let path: String, probe: String, identity: FileIdentity
        switch WebRootPath.resolve(target: target, root: root) {
        case .badRequest: return .refused(.badRequest, headers: [])
        case .notFound: return .refused(.notFound, headers: [])
        case .directoryWithoutSlash(let location): return .refused(.movedPermanently, headers: [("Location", location)])
        case .file(let resolved, let requested, let checked): (path, probe, identity) = (resolved, requested, checked)
        }
        // open(2) and fstat(2) on a local file are quick; doing them on the event loop saves two thread
        // hops per request.
        guard let (fd, info) = identity.open(path) else { return .refused(.notFound, headers: []) }
        let validators = Validators(size: Int(info.st_size), modifiedSeconds: Int(info.st_mtim.tv_sec),
                                    modifiedNanoseconds: Int(info.st_mtim.tv_nsec))
        let content = validators.size <= FileCache.maxContentSize ? Self.read(fd, count: validators.size) : nil
        let entry = FileCache.Entry(file: path, probe: probe, identity: FileCache.Identity(info), validators: validators,
                                    contentType: MediaType.forPath(path), content: content)
        if cache.admits(info) { cache.insert(entry, for: key) }
        if entry.content != nil {
            close(fd)
            return .file(entry, descriptor: -1)
        }
        return .file(entry, descriptor: fd)
    }

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext) {
        // One look at `Connection` per request: HTTPRequestHead.isKeepAlive scans the fields each time.
        let keepAlive = request.isKeepAlive
        if !keepAlive { closing = true }
        let entry: FileCache.Entry
        var fd: Int32
        switch lookup(request.uri) {
        case .refused(let status, let headers): return SimpleResponse.send(status, to: request, context: context, headers: headers, pacer: pacer)
        case .file(let found, let descriptor): (entry, fd) = (found, descriptor)
        }
        defer { if fd >= 0 { close(fd) } }
        let size = entry.validators.size
        switch entry.validators.precondition(request.headers) {
        case .proceed: break
        case .notModified: return SimpleResponse.send(.notModified, to: request, context: context, headers: entry.validatorHeaders, pacer: pacer)
        case .failed: return SimpleResponse.send(.preconditionFailed, to: request, context: context, pacer: pacer)
        }
        var status = HTTPResponseStatus.ok
        var range = 0..<size
        // A whole file's fields go out as the cache encoded them; a range's are the entry's, amended.
        var prepared: ByteBuffer? = entry.fullResponseFields
        var headers = HTTPHeaders()
        if let rangeHeader = request.headers.first(name: "Range"), entry.validators.rangeApplies(request.headers) {
            switch ByteRange.parse(rangeHeader, size: size) {
            case .satisfiable(let requested):
                status = .partialContent
                range = requested
                prepared = nil
                headers = entry.fullResponseHeaders
                headers.replaceOrAdd(name: "Content-Length", value: String(range.count))
                headers.add(name: "Content-Range", value: "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(size)")
            case .unsatisfiable:
                return SimpleResponse.send(.rangeNotSatisfiable, to: request, context: context,
                                           headers: [("Content-Range", "bytes */\(size)")], pacer: pacer)
            case .ignored:
                break
            }
        }
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if request.version == .http1_0 {
            // HTTP/1.0 keeps a connection only when the response says so (RFC 9112 §9.3, appendix C.2.2).
            headers.add(name: "Connection", value: "keep-alive")
        }
        let head = HTTPResponseHead(version: request.version, status: status, headers: headers)
        if request.method == .HEAD || range.isEmpty {
            let last = SimpleResponse.lastPartPromise(context)
            write(head, prepared: prepared, promise: last, context: context)
            return SimpleResponse.end(request: request, keepAlive: keepAlive, after: last, pacer: pacer, context: context)
        }
        let corked = entry.content == nil && Self.cork(context.channel, true)
        write(head, prepared: prepared, promise: nil, context: context)
        if let content = entry.content {
            // Small content goes in the same write as the head (ResponseEncoder joins them): one segment
            // on the wire instead of a write for the head and a sendfile(2) for the body.
            let last = SimpleResponse.lastPartPromise(context)
            let slice = content.getSlice(at: content.readerIndex + range.lowerBound, length: range.count) ?? ByteBuffer()
            context.write(wrapOutboundOut(.body(.byteBuffer(slice))), promise: last)
            return SimpleResponse.end(request: request, keepAlive: keepAlive, after: last, pacer: pacer, context: context)
        }
        // A file region always waits for its content to go out before the response ends: its descriptor
        // stays open until then, and must not be one per pipelined request.
        let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: fd)
        fd = -1
        let region = FileRegion(fileHandle: handle, readerIndex: range.lowerBound, endIndex: range.upperBound)
        let last = context.eventLoop.makePromise(of: Void.self)
        let channel = context.channel
        last.futureResult.whenComplete { _ in
            try? handle.close()
            if corked { _ = Self.cork(channel, false) }
        }
        context.write(wrapOutboundOut(.body(.fileRegion(region))), promise: last)
        SimpleResponse.end(request: request, keepAlive: keepAlive, after: last, pacer: pacer, context: context)
    }

    private func write(_ head: HTTPResponseHead, prepared: ByteBuffer?, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard let prepared else { return context.write(wrapOutboundOut(.head(head)), promise: promise) }
        encoder.withPreparedFields(prepared) { context.write(wrapOutboundOut(.head(head)), promise: promise) }
    }

    /// `TCP_CORK`, as nginx's `tcp_nopush`: while corked, the head waits for the file's first bytes, so a
    /// response sent with sendfile(2) leaves in full segments instead of a small one for the head first
    /// (that small segment doubled wrk's kernel CPU for a 1 MiB file on loopback, nginx's too without
    /// `tcp_nopush`). Uncorking sends what is left at once. On the channel's loop; false if refused.
    private static func cork(_ channel: any Channel, _ on: Bool) -> Bool {
        let option = ChannelOptions.Types.SocketOption(level: .tcp, name: NIOBSDSocket.Option(rawValue: TCP_CORK))
        return (try? channel.syncOptions?.setOption(option, value: on ? 1 : 0)) != nil
    }

    /// Reads a (page-cached, local) file whole; nil if it came up short, and sendfile is used instead.
    private static func read(_ fd: Int32, count: Int) -> ByteBuffer? {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(count)
        let read = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { bytes in
            max(0, pread(fd, bytes.baseAddress, count, 0))
        }
        return read == count ? buffer : nil
    }
}
