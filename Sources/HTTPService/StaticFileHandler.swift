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
