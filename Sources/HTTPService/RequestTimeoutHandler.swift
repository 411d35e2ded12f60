import NIOCore
import NIOHTTP1

/// Cuts off idle and slow clients: a connection with no request for the keep-alive timeout is closed
/// quietly; one that started a request but has not finished its head within the head timeout gets 408
/// and is closed (slow-header attacks, "slowloris"); so does a request whose body stops arriving: the
/// same timeout runs from each body part received (`Content-Length: 1`, then silence, held a
/// connection forever once).
///
/// It learns of a request's first byte from ``RequestActivityMarker``, of its head by reading it, and of
/// the end of each response from ``ResponseEncoder`` (not by watching every outbound part itself: each
/// part a handler inspects costs a dynamic cast, and that showed up in profiles).
final class RequestTimeoutHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    enum Phase { case idle, readingHead, readingBody, inRequest }

    private let keepAlive: TimeAmount
    private let head: TimeAmount
    private var phase = Phase.idle
    /// Requests decoded and not yet answered: pipelined requests wait behind the one being answered, and
    /// the connection is idle only when none is left.
    private var unanswered = 0
    /// One timer per connection, re-armed lazily: requests move `deadline` later, and the timer, when it
    /// fires early, sleeps again until it (scheduling and cancelling a timer per request showed up in
    /// profiles). Only a deadline earlier than the timer's (a head or body timeout after the keep-alive
    /// one) replaces it.
    private var timer: (task: Scheduled<Void>, due: NIODeadline)?
    private var deadline: NIODeadline?
    private var context: ChannelHandlerContext?
    /// Times and counts the exchanges, when the host keeps metrics.
    private let meter: ExchangeMeter?

    init(keepAlive: TimeAmount, head: TimeAmount, meter: ExchangeMeter?) {
        self.keepAlive = keepAlive
        self.head = head
        self.meter = meter
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { arm(keepAlive, context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(keepAlive, context: context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    /// Raw bytes arrived (see ``RequestActivityMarker``): an idle connection is now reading a head.
    func bytesArrived() {
        guard phase == .idle, let context else { return }
        phase = .readingHead
        arm(head, context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            meter?.requestArrived(head)
            unanswered += 1
            if Self.hasBody(head) {
                phase = .readingBody
                arm(self.head, context: context)
            } else {
                phase = .inRequest
                deadline = nil
            }
        case .body:
            if phase == .readingBody { arm(head, context: context) }
        case .end:
            if phase == .readingBody {
                // The response may have gone out already (a refusal at the head): then the connection is
                // idle now.
                if unanswered == 0 {
                    phase = .idle
                    arm(keepAlive, context: context)
                } else {
                    phase = .inRequest
                    deadline = nil
                }
            }
        }
        context.fireChannelRead(data)
    }

    /// RFC 9112 §6.3: a request has content when it says how long it is or that it is chunked.
    private static func hasBody(_ head: HTTPRequestHead) -> Bool {
        if let length = head.headers.first(name: "Content-Length") { return length != "0" }
        return head.headers.contains(name: "Transfer-Encoding")
    }

    /// A response was ended (see ``ResponseEncoder``): once every request read is answered, the
    /// connection is idle again.
    func responseEnded() {
        guard unanswered > 0, let context else { return }
        unanswered -= 1
        // A body still arriving keeps its own timeout: the connection is not idle until it has.
        if unanswered == 0, phase != .readingBody {
            phase = .idle
            arm(keepAlive, context: context)
        }
    }

    private func arm(_ delay: TimeAmount, context: ChannelHandlerContext) {
        let due = NIODeadline.now() + delay
        deadline = due
        if let timer {
            guard due < timer.due else { return }
            timer.task.cancel()
        }
        schedule(at: due, context: context)
    }

    private func disarm() {
        deadline = nil
        timer?.task.cancel()
        timer = nil
    }

    private func schedule(at due: NIODeadline, context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let task = context.eventLoop.scheduleTask(deadline: due) {
            let (handler, context) = loopBound.value
            handler.timer = nil
            guard let deadline = handler.deadline else { return }  // disarmed: a request is in progress
            if deadline > .now() {
                handler.schedule(at: deadline, context: context)
            } else {
                handler.deadline = nil
                handler.expired(context: context)
            }
        }
        timer = (task, due)
    }

    private func expired(context: ChannelHandlerContext) {
        switch phase {
        case .idle:
            context.close(promise: nil)
        case .readingHead:
            SimpleResponse.sendAndClose(.requestTimeout, context: context)
        case .readingBody:
            // The 408 answers the request whose body stopped: only if it has no answer yet (a refusal
            // at its head, 405 say, has) and no earlier response is still being written.
            if unanswered == 1 {
                SimpleResponse.sendAndClose(.requestTimeout, context: context)
            } else {
                context.close(promise: nil)
            }
        case .inRequest:
            break
        }
    }
}

/// Sits before the HTTP decoder and tells the timeout handler when raw bytes arrive, so that the head
/// timeout runs from a request's first byte, not from the previous response; a read also begins the
/// connection's run for its ``ResponsePacer``.
final class RequestActivityMarker: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let timeouts: RequestTimeoutHandler
    private let pacer: ResponsePacer

    init(timeouts: RequestTimeoutHandler, pacer: ResponsePacer) {
        self.timeouts = timeouts
        self.pacer = pacer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        timeouts.bytesArrived()
        pacer.runBegins()
        context.fireChannelRead(data)
    }
}
