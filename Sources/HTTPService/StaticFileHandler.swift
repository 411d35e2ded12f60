import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Answers GET and HEAD with files from the web root; everything else gets a precise error.
/// Keep-alive, pipelining order and quiescing come from NIO's HTTPServerPipelineHandler in front.
final class StaticFileHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let root: String
    private var head: HTTPRequestHead?

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
        guard request.method == .GET || request.method == .HEAD else {
            sendError(.methodNotAllowed, request: request, context: context, extra: [("Allow", "GET, HEAD")])
            return
        }
        let path: String
        switch WebRootPath.resolve(target: request.uri, root: root) {
        case .badRequest: return sendError(.badRequest, request: request, context: context)
        case .notFound: return sendError(.notFound, request: request, context: context)
        case .file(let resolved): path = resolved
        }
        // open(2) and fstat(2) on a local file are quick; doing them on the event loop saves two thread
        // hops per request, and the body goes out with sendfile(2) through a FileRegion.
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        var info = stat()
        guard fd >= 0, fstat(fd, &info) == 0 else {
            if fd >= 0 { close(fd) }
            return sendError(.notFound, request: request, context: context)
        }
        let handle = NIOFileHandle(_deprecatedTakingOwnershipOfDescriptor: fd)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: MediaType.forPath(path))
        headers.add(name: "Content-Length", value: String(info.st_size))
        headers.add(name: "Last-Modified", value: HTTPDate.format(Date(timeIntervalSince1970: TimeInterval(info.st_mtim.tv_sec))))
        writeHead(.ok, request: request, headers: headers, context: context)
        if request.method == .HEAD || info.st_size == 0 {
            try? handle.close()
        } else {
            let region = FileRegion(fileHandle: handle, readerIndex: 0, endIndex: Int(info.st_size))
            context.write(wrapOutboundOut(.body(.fileRegion(region)))).whenComplete { _ in
                try? handle.close()
            }
        }
        writeEnd(request: request, context: context)
    }

    private func sendError(_ status: HTTPResponseStatus, request: HTTPRequestHead, context: ChannelHandlerContext,
                           extra: [(String, String)] = []) {
        let body = "\(status.code) \(status.reasonPhrase)\n"
        var headers = HTTPHeaders(extra)
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: String(body.utf8.count))
        writeHead(status, request: request, headers: headers, context: context)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        }
        writeEnd(request: request, context: context)
    }

    private func writeHead(_ status: HTTPResponseStatus, request: HTTPRequestHead, headers: HTTPHeaders,
                           context: ChannelHandlerContext) {
        var headers = headers
        headers.add(name: "Server", value: "inetinfo")
        if !request.isKeepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: request.version, status: status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
    }

    private func writeEnd(request: HTTPRequestHead, context: ChannelHandlerContext) {
        let keepAlive = request.isKeepAlive
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}

/// `Last-Modified` dates (RFC 9110 §5.6.7, IMF-fixdate).
enum HTTPDate {
    static func format(_ date: Date) -> String {
        var time = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&time, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Content types by file extension.
enum MediaType {
    static let byExtension: [String: String] = [
        "html": "text/html; charset=utf-8", "htm": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
        "js": "text/javascript; charset=utf-8", "mjs": "text/javascript; charset=utf-8",
        "json": "application/json", "txt": "text/plain; charset=utf-8", "xml": "application/xml",
        "svg": "image/svg+xml", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
        "webp": "image/webp", "ico": "image/vnd.microsoft.icon", "avif": "image/avif",
        "woff": "font/woff", "woff2": "font/woff2", "ttf": "font/ttf", "otf": "font/otf",
        "pdf": "application/pdf", "zip": "application/zip", "gz": "application/gzip", "wasm": "application/wasm",
        "mp4": "video/mp4", "webm": "video/webm", "mp3": "audio/mpeg", "ogg": "audio/ogg", "wav": "audio/wav",
        "csv": "text/csv; charset=utf-8", "md": "text/markdown; charset=utf-8",
    ]

    static func forPath(_ path: String) -> String {
        guard let dot = path.lastIndex(of: "."), !path[dot...].contains("/") else { return "application/octet-stream" }
        return byExtension[path[path.index(after: dot)...].lowercased()] ?? "application/octet-stream"
    }
}
