import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Answers GET and HEAD (the only methods ``RequestGuard`` lets through) with files from the web root:
/// validators (`ETag`, `Last-Modified`), conditional requests (304), a single byte range (206, 416), and
/// the content: small files from memory in the same write as the head, larger ones as a zero-copy
/// `FileRegion`, which NIO sends with sendfile(2) as the socket drains. Paths already resolved are
/// looked up in the ``FileCache``.
final class StaticFileHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let root: String
    private let cache: FileCache
    private var head: HTTPRequestHead?

    init(root: String, cache: FileCache) {
        self.root = root
        self.cache = cache
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
            let fd = open(entry.file, O_RDONLY | O_CLOEXEC)
            var info = stat()
            if fd >= 0, fstat(fd, &info) == 0, FileCache.Identity(info) == entry.identity {
                return .file(entry, descriptor: fd)
            }
            if fd >= 0 { close(fd) }
        }
        let path: String, probe: String
        switch WebRootPath.resolve(target: target, root: root) {
        case .badRequest: return .refused(.badRequest, headers: [])
        case .notFound: return .refused(.notFound, headers: [])
        case .directoryWithoutSlash(let location): return .refused(.movedPermanently, headers: [("Location", location)])
        case .file(let resolved, let requested): (path, probe) = (resolved, requested)
        }
        // open(2) and fstat(2) on a local file are quick; doing them on the event loop saves two thread
        // hops per request.
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        var info = stat()
        guard fd >= 0, fstat(fd, &info) == 0 else {
            if fd >= 0 { close(fd) }
            return .refused(.notFound, headers: [])
        }
        let validators = Validators(size: Int(info.st_size), modifiedSeconds: Int(info.st_mtim.tv_sec),
                                    modifiedNanoseconds: Int(info.st_mtim.tv_nsec))
        var entry = FileCache.Entry(file: path, probe: probe, identity: FileCache.Identity(info), validators: validators,
                                    contentType: MediaType.forPath(path))
        if validators.size <= FileCache.maxContentSize {
            entry.content = Self.read(fd, count: validators.size)
        }
        if cache.admits(info) { cache.insert(entry, for: key) }
        if entry.content != nil {
            close(fd)
            return .file(entry, descriptor: -1)
        }
        return .file(entry, descriptor: fd)
    }

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext) {
        let entry: FileCache.Entry
        var fd: Int32
        switch lookup(request.uri) {
        case .refused(let status, let headers): return SimpleResponse.send(status, to: request, context: context, headers: headers)
        case .file(let found, let descriptor): (entry, fd) = (found, descriptor)
        }
        defer { if fd >= 0 { close(fd) } }
        let size = entry.validators.size
        if entry.validators.notModified(request.headers) {
            return SimpleResponse.send(.notModified, to: request, context: context, headers: entry.validatorHeaders)
        }
        var status = HTTPResponseStatus.ok
        var range = 0..<size
        var headers = entry.fullResponseHeaders
        if let rangeHeader = request.headers.first(name: "Range"), entry.validators.rangeApplies(request.headers) {
            switch ByteRange.parse(rangeHeader, size: size) {
            case .satisfiable(let requested):
                status = .partialContent
                range = requested
                headers.replaceOrAdd(name: "Content-Length", value: String(range.count))
                headers.add(name: "Content-Range", value: "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(size)")
            case .unsatisfiable:
                return SimpleResponse.send(.rangeNotSatisfiable, to: request, context: context,
                                           headers: [("Content-Range", "bytes */\(size)")])
            case .ignored:
                break
            }
        }
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        var sending: EventLoopFuture<Void>?
        if request.method == .HEAD || range.isEmpty {
            // Headers only.
        } else if let content = entry.content {
            // Small content goes in the same write as the head: one segment on the wire instead of a
            // write for the head and a sendfile(2) for the body.
            let body = wrapOutboundOut(.body(.byteBuffer(content.getSlice(at: content.readerIndex + range.lowerBound, length: range.count)!)))
            if context.channel.isWritable {
                context.write(body, promise: nil)
            } else {
                sending = context.write(body)
            }
        } else {
            let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: fd)
            fd = -1
            let region = FileRegion(fileHandle: handle, readerIndex: range.lowerBound, endIndex: range.upperBound)
            sending = context.write(wrapOutboundOut(.body(.fileRegion(region))))
            sending?.whenComplete { _ in try? handle.close() }
        }
        guard let sending else { return SimpleResponse.end(request: request, keepAlive: keepAlive, context: context) }
        // A response that cannot go out at once ends only once its content has: until then NIO's
        // HTTPServerPipelineHandler holds pipelined requests back and stops reading, so a client that sends
        // requests without reading the answers cannot make us queue a descriptor or a buffer per request.
        // The end is written from a fresh event loop task, not from the completion: ending a response
        // makes NIO deliver the next pipelined request at once, and a content write that completes during
        // the flush would otherwise nest one response inside the other, a stack frame per request.
        // A failed write means the connection is gone: close it rather than answer the next request.
        context.flush()
        let ending = NIOLoopBound(context, eventLoop: context.eventLoop)
        sending.whenComplete { result in
            let context = ending.value
            guard case .success = result else { return context.close(promise: nil) }
            context.eventLoop.execute {
                SimpleResponse.end(request: request, keepAlive: keepAlive, context: ending.value)
            }
        }
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
