import Foundation
import Logging
import NIOCore
import NIOPosix
import Supervision

/// The I/O edge of an SMTP session: feeds received bytes to ``SMTPSession`` and carries out its actions
/// (replies, spooling, commits — through the journal's writer thread, or the direct way on the commit
/// pool — and closing). Pipelined commands are answered in order.
///
/// Memory per session is bounded both ways. While a message is being committed the channel stops
/// reading, so input never piles up. And replies are produced only as fast as the client reads them:
/// commands are fed to the engine a slice at a time, and once the channel is not writable (more than its
/// high-water mark of replies waits to be sent) the engine is not fed and the channel not read until it is
/// writable again — a client that pipelines `HELP` without reading the answers gets at most one slice's
/// replies beyond the mark, and is cut off by the send timeout.
final class SMTPHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Environment: Sendable {
        var options: SMTPSession.Options
        var delivery: SMTPSettings.Delivery
        var writer: MaildirWriter
        /// Commits go through it when set (`smtp.commit = journal`), the direct way otherwise.
        var journal: MailJournal?
        var commitPool: NIOThreadPool
        var deliveries: DeliveryQueue
        var sessions: ConnectionLimiter
        var names: MaildirNames
        var logger: Logger
        var metrics: SMTPMetrics
        /// Ends the instance (the MS02-012 replay).
        var fail: @Sendable (String) -> Void
    }

    private let environment: Environment
    private var session: SMTPSession
    private var input: ByteBuffer?
    private var spool: MessageSpool?
    /// A message whose spool file is not made yet: it is made once the replies before it (the 354) are
    /// on their way, so the client's wait for them does not include an `open` in the spool folder — or
    /// at once when content or the commit comes first (BDAT content in the same read).
    private var unspooled: Envelope?
    private var spoolError: MaildirError?
    private var message: (id: String, fileName: String)?
    /// The current message's content octets so far.
    private var messageBytes = 0
    /// When the current message's commit began.
    private var commitStarted: NIODeadline?
    /// The peer address holding a session slot, once admitted.
    private var admitted: String??
    private var quiescing = false
    /// Whether the channel reads (autoRead), as last set: changed only when it must change.
    private var reading = true
    /// Command input is fed to the engine this much at a time, so that replies stop once the channel is
    /// not writable; message content goes whole (it produces no replies).
    static let commandSlice = 4096
    /// Slices of command input per turn of the event loop: past them the rest waits for a task of its
    /// own, so that one client pipelining thousands of commands does not hold the loop (its other
    /// sessions, and the supervisor's liveness ping) for as long as they take.
    static let commandSlicesPerTurn = 4
    /// A continuation of ``drive(context:)`` is queued.
    private var resumeQueued = false

    init(environment: Environment) {
        self.environment = environment
        session = SMTPSession(options: environment.options)
    }

    func channelActive(context: ChannelHandlerContext) {
        let client = context.channel.remoteAddress?.ipAddress
        let refusal: String
        switch environment.sessions.enter(client: client) {
        case .admitted:
            refusal = ""
        case .serviceFull:
            environment.logger.warning("session refused: too many sessions", metadata: ["limit": "\(environment.sessions.limit)"])
            refusal = "421 4.7.0 \(environment.options.hostName) Too many sessions, try again later"
        case .clientFull:
            environment.logger.warning("session refused: too many sessions from one client", metadata: [
                "client": "\(client ?? "-")", "limit": "\(environment.sessions.perClientLimit)",
            ])
            refusal = "421 4.7.0 \(environment.options.hostName) Too many sessions from your address, try again later"
        }
        guard refusal.isEmpty else {
            send(refusal, context: context)
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        admitted = .some(client)
        environment.metrics.sessionsTotal.increment()
        environment.metrics.sessionsOpen.increment()
        send(session.greeting, context: context)
        context.flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let client = admitted {
            environment.sessions.leave(client: client)
            environment.metrics.sessionsOpen.decrement()
        }
        admitted = nil
        discardSpool()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted != nil else { return }
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

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, admitted != nil {
            drive(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        environment.logger.debug("session error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    /// Runs the engine over the input received so far, as far as the channel can take the replies, then
    /// reads on only if all of it was consumed.
    private func drive(context: ChannelHandlerContext) {
        // A session that ended during a commit (its completion still arrives) starts nothing more.
        guard admitted != nil else {
            input = nil
            return
        }
        if var buffer = input {
            input = nil
            var slices = 0
            while buffer.readableBytes > 0, context.channel.isWritable, !session.isClosed, !session.isAwaitingDelivery {
                if !session.isReceivingContent {
                    guard slices < Self.commandSlicesPerTurn else {
                        resumeNextTurn(context: context)
                        break
                    }
                    slices += 1
                }
                let length = session.isReceivingContent ? buffer.readableBytes : min(buffer.readableBytes, Self.commandSlice)
                var slice = buffer.getSlice(at: buffer.readerIndex, length: length)!
                let actions = session.receive(&slice)
                buffer.moveReaderIndex(forwardBy: length - slice.readableBytes)
                perform(actions, context: context)
                context.flush()
                openSpool(context: context)
            }
            if buffer.readableBytes > 0, !session.isClosed { input = buffer }
        }
        updateReading(context: context)
    }

    private func resumeNextTurn(context: ChannelHandlerContext) {
        guard !resumeQueued else { return }
        resumeQueued = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = bound.value
            handler.resumeQueued = false
            guard handler.admitted != nil, context.channel.isActive else { return }
            handler.drive(context: context)
        }
    }

    /// Reads while nothing waits: no input left over, no commit in progress, room for replies.
    private func updateReading(context: ChannelHandlerContext) {
        let wanted = input == nil && !session.isAwaitingDelivery && !session.isClosed && context.channel.isWritable
        guard wanted != reading else { return }
        reading = wanted
        context.channel.setOption(ChannelOptions.autoRead, value: wanted).whenComplete { _ in }
    }

    private func perform(_ actions: [SMTPSession.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .reply(let text):
                send(text, context: context)
            case .startMessage(let envelope):
                startMessage(envelope)
            case .messageData(let octets):
                openSpool(context: context)
                messageBytes += octets.readableBytes
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

    private func startMessage(_ envelope: Envelope) {
        discardSpool()
        message = environment.names.next()
        messageBytes = 0
        if environment.delivery == .maildir { unspooled = envelope }
    }

    private func openSpool(context: ChannelHandlerContext) {
        guard let envelope = unspooled, let names = message else { return }
        unspooled = nil
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
        unspooled = nil
        spool?.discard()
        spool = nil
        spoolError = nil
    }

    private func commit(context: ChannelHandlerContext) {
        let id = message?.id ?? "-"
        commitStarted = .now()
        guard environment.delivery == .maildir else {
            finishDelivery(.delivered(id: id), context: context)
            return
        }
        openSpool(context: context)
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
        let writer = environment.writer
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let logger = environment.logger
        let committed = context.eventLoop.makePromise(of: Void.self)
        if let journal = environment.journal {
            writer.commit(finished, through: journal, deliveringWith: environment.deliveries, directOn: environment.commitPool,
                          completing: committed) { error in
                // Acknowledged and safe in the journal: the checkpointer retries until it succeeds.
                logger.error("delivery into the Maildir failed; retrying", metadata: ["id": "\(id)", "error": "\(error)"])
            }
        } else {
            writer.commitDirect(finished, on: environment.commitPool, completing: committed)
        }
        // Stop reading until the message is on disk: pipelined input waits in the socket, not in memory.
        // After handing the commit over: the journal's writer starts while the loop tells epoll.
        updateReading(context: context)
        committed.futureResult.whenComplete { result in
            let (handler, context) = loopBound.value
            switch result {
            case .success: handler.finishDelivery(.delivered(id: id), context: context)
            case .failure(let error): handler.finishDelivery(handler.outcome(of: error, id: id), context: context)
            }
        }
    }

    private func outcome(of error: any Error, id: String) -> SMTPSession.DeliveryOutcome {
        environment.logger.error("delivery failed", metadata: ["id": "\(id)", "error": "\(error)"])
        if let error = error as? MaildirError, error.isOutOfSpace { return .insufficientStorage }
        if case MailJournal.JournalError.full = error { return .insufficientStorage }
        return .failed
    }

    private func finishDelivery(_ outcome: SMTPSession.DeliveryOutcome, context: ChannelHandlerContext) {
        spoolError = nil
        if case .delivered = outcome {
            environment.metrics.messagesAccepted.increment()
            environment.metrics.messageBytes.increment(by: messageBytes)
            if let commitStarted { environment.metrics.deliveryDurations.recordNanoseconds((NIODeadline.now() - commitStarted).nanoseconds) }
        }
        commitStarted = nil
        perform(session.deliveryFinished(outcome), context: context)
        if quiescing, !session.isClosed {
            perform(session.shuttingDown(), context: context)
        }
        context.flush()
        // Logged once the reply is on its way: the line (a clock read and a write) is not the client's wait.
        if case .delivered(let id) = outcome, environment.delivery == .maildir {
            environment.logger.info("message delivered", metadata: ["id": "\(id)"])
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
        environment.metrics.replied(text)
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
