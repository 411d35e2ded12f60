import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Frames lines for ``SMTPSession`` and carries out its actions: replies, Maildir delivery on the
/// blocking-I/O pool, closing. Pipelined commands are handled in order; while a delivery runs, later
/// input waits.
final class SMTPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var session: SMTPSession
    private let writer: MaildirWriter
    private let logger: Logger
    private var buffer: [UInt8] = []
    private var discardingLongLine = false
    private var delivering = false
    private var quiescing = false
    private var closed = false
    private static let deliveryCounter = NIOLockedValueBox(0)

    init(session: SMTPSession, writer: MaildirWriter, logger: Logger) {
        self.session = session
        self.writer = writer
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        send(session.greeting, context: context)
        context.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffer.append(contentsOf: bytes.readBytes(length: bytes.readableBytes) ?? [])
        process(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            perform(session.timedOut(), context: context)
        } else if event is ChannelShouldQuiesceEvent {
            quiescing = true
            if !delivering { perform(session.shuttingDown(), context: context) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func process(context: ChannelHandlerContext) {
        var start = 0
        defer { buffer.removeFirst(start) }
        while !delivering, !closed {
            guard let newline = buffer[start...].firstIndex(of: 0x0A) else {
                let limit = session.isInData ? 1000 : 512
                if buffer.count - start > limit {
                    // RFC 5321 §4.5.3.1: a line over the limit is refused and the rest of it discarded.
                    if !discardingLongLine { perform(session.lineTooLong(), context: context) }
                    discardingLongLine = true
                    start = buffer.count
                }
                break
            }
            var line = Array(buffer[start..<newline])
            start = newline + 1
            if discardingLongLine {
                discardingLongLine = false
                continue
            }
            if line.last == 0x0D { line.removeLast() }
            perform(session.receive(line: line), context: context)
        }
        context.flush()
    }

    private func perform(_ actions: [SMTPSession.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .reply(let text):
                send(text, context: context)
            case .close:
                closed = true
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
            case .deliver(let envelope, let body):
                deliver(envelope, body: body, context: context)
            }
        }
    }

    private func deliver(_ envelope: Envelope, body: [UInt8], context: ChannelHandlerContext) {
        delivering = true
        let id = Self.deliveryCounter.withLockedValue { counter -> String in
            counter += 1
            return "M\(UInt64(Date().timeIntervalSince1970 * 1_000_000) % 1_000_000)P\(getpid())Q\(counter)"
        }
        let peer = context.channel.remoteAddress?.ipAddress ?? "unknown"
        let received = "Received: from \(envelope.heloName) ([\(peer)])\r\n\tby \(writer.hostName) (inetinfo) with ESMTP id \(id);\r\n\t\(Self.rfc5322Date())\r\n"
        let message = Array(received.utf8) + body
        let writer = self.writer
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) {
            try writer.deliver(message: message, recipients: envelope.recipients, uniqueID: id)
        }.whenComplete { result in
            let (handler, context) = loopBound.value
            if case .failure(let error) = result {
                handler.logger.error("delivery failed", metadata: ["id": "\(id)", "error": "\(error)"])
            } else {
                handler.logger.info("message delivered", metadata: ["id": "\(id)", "recipients": "\(envelope.recipients.count)", "bytes": "\(message.count)"])
            }
            handler.delivering = false
            handler.perform(handler.session.deliveryFinished(success: (try? result.get()) != nil), context: context)
            if handler.quiescing, !handler.closed {
                handler.perform(handler.session.shuttingDown(), context: context)
            }
            handler.process(context: context)
        }
    }

    private func send(_ text: String, context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: text.utf8.count + 2)
        out.writeString(text)
        out.writeString("\r\n")
        context.write(wrapOutboundOut(out), promise: nil)
    }

    static func rfc5322Date() -> String {
        var time = time(nil)
        var parts = tm()
        localtime_r(&time, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S %z", &parts)
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
