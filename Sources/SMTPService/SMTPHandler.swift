import Foundation
import Logging
import NIOCore
import NIOPosix
import Supervision

/// The I/O edge of an SMTP session: feeds received bytes to ``SMTPSession`` and carries out its actions
/// (replies, spooling to `tmp/`, commits on the commit pool, closing). Pipelined commands are answered in
/// order; while a message is being committed the channel stops reading, so input never piles up in memory.
final class SMTPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Environment: Sendable {
        var options: SMTPSession.Options
        var delivery: SMTPSettings.Delivery
        var writer: MaildirWriter
        var commitPool: NIOThreadPool
        var sessions: ConnectionLimiter
        var names: MaildirNames
        var logger: Logger
        /// Ends the instance (the MS02-012 replay).
        var fail: @Sendable (String) -> Void
    }

    private let environment: Environment
    private var session: SMTPSession
    private var input: ByteBuffer?
    private var spool: MessageSpool?
    private var spoolError: MaildirError?
    private var message: (id: String, fileName: String)?
    private var admitted = false
    private var quiescing = false

    init(environment: Environment) {
        self.environment = environment
        session = SMTPSession(options: environment.options)
    }

    func channelActive(context: ChannelHandlerContext) {
        guard environment.sessions.enter() else {
            environment.logger.warning("session refused: too many sessions", metadata: ["limit": "\(environment.sessions.limit)"])
            send("421 4.7.0 \(environment.options.hostName) Too many sessions, try again later", context: context)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        admitted = true
        send(session.greeting, context: context)
        context.flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if admitted { environment.sessions.leave() }
        admitted = false
        discardSpool()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted else { return }
        var bytes = unwrapInboundIn(data)
        if input == nil || input!.readableBytes == 0 {
            input = bytes
        } else {
            input!.writeBuffer(&bytes)
        }
        drive(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            guard !session.isAwaitingDelivery else { return }
            perform(session.timedOut(), context: context)
            context.flush()
        } else if event is ChannelShouldQuiesceEvent {
            quiescing = true
            if !session.isAwaitingDelivery {
                perform(session.shuttingDown(), context: context)
                context.flush()
            }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        environment.logger.debug("session error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// Runs the engine over the input received so far.
    private func drive(context: ChannelHandlerContext) {
        guard var buffer = input else { return }
        input = nil
        let actions = session.receive(&buffer)
        if buffer.readableBytes > 0 { input = buffer }
        perform(actions, context: context)
        context.flush()
    }

    private func perform(_ actions: [SMTPSession.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .reply(let text):
                send(text, context: context)
            case .startMessage(let envelope):
                startSpool(envelope, context: context)
            case .messageData(let octets):
                spool?.append(octets)
            case .discardMessage:
                discardSpool()
            case .commitMessage:
                commit(context: context)
            case .close:
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
            case .simulatedFailure(let reason):
                environment.logger.critical("MS02-012 replay: failing the SMTP service as in 2002", metadata: ["reason": "\(reason)"])
                discardSpool()
                // The replies to the commands before the fatal one go out first, as they did in 2002.
                context.flush()
                environment.fail(reason)
                context.close(promise: nil)
            }
        }
    }

    private func startSpool(_ envelope: Envelope, context: ChannelHandlerContext) {
        discardSpool()
        let names = environment.names.next()
        message = names
        guard environment.delivery == .maildir else { return }
        do {
            let spool = try environment.writer.openSpool(recipients: envelope.recipients, uniqueName: names.fileName)
            spool.append(Array(receivedHeader(envelope, id: names.id, context: context).utf8))
            self.spool = spool
        } catch let error as MaildirError {
            spoolError = error
        } catch {
            spoolError = MaildirError(path: environment.writer.root, operation: "spool", errno: EIO)
        }
    }

    private func discardSpool() {
        spool?.discard()
        spool = nil
        spoolError = nil
    }

    private func commit(context: ChannelHandlerContext) {
        let id = message?.id ?? "-"
        guard environment.delivery == .maildir else {
            finishDelivery(.delivered(id: id), context: context)
            return
        }
        let finished: MessageSpool.Finished
        do {
            if let spoolError { throw spoolError }
            guard let spool else { throw MaildirError(path: environment.writer.root, operation: "spool", errno: EIO) }
            finished = try spool.finish()
            self.spool = nil
        } catch {
            finishDelivery(outcome(of: error, id: id), context: context)
            return
        }
        // Stop reading until the message is on disk: pipelined input waits in the socket, not in memory.
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        let writer = environment.writer
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        environment.commitPool.runIfActive(eventLoop: context.eventLoop) {
            try writer.commit(finished)
        }.whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success: handler.finishDelivery(.delivered(id: id), context: context)
            case .failure(let error): handler.finishDelivery(handler.outcome(of: error, id: id), context: context)
            }
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        }
    }

    private func outcome(of error: any Error, id: String) -> SMTPSession.DeliveryOutcome {
        environment.logger.error("delivery failed", metadata: ["id": "\(id)", "error": "\(error)"])
        if let error = error as? MaildirError, error.isOutOfSpace { return .insufficientStorage }
        return .failed
    }

    private func finishDelivery(_ outcome: SMTPSession.DeliveryOutcome, context: ChannelHandlerContext) {
        spoolError = nil
        if case .delivered(let id) = outcome, environment.delivery == .maildir {
            environment.logger.info("message delivered", metadata: ["id": "\(id)"])
        }
        perform(session.deliveryFinished(outcome), context: context)
        if quiescing, !session.isClosed {
            perform(session.shuttingDown(), context: context)
        }
        drive(context: context)
        context.flush()
    }

    private func receivedHeader(_ envelope: Envelope, id: String, context: ChannelHandlerContext) -> String {
        let peer = context.channel.remoteAddress?.ipAddress ?? "unknown"
        let recipient = envelope.recipients.count == 1 ? "\r\n\tfor <\(envelope.recipients[0])>" : ""
        return "Return-Path: <\(envelope.sender)>\r\nReceived: from \(envelope.heloName) ([\(peer)])\r\n\tby \(environment.options.hostName) (inetinfo) with ESMTP id \(id)\(recipient);\r\n\t\(Self.rfc5322Date())\r\n"
    }

    private func send(_ text: String, context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: text.utf8.count + 2)
        out.writeString(text)
        out.writeString("\r\n")
        context.write(wrapOutboundOut(out), promise: nil)
    }

    static func rfc5322Date() -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%a, %d %b %Y %H:%M:%S %z", &parts)
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
