import CProcessControl
import Foundation
import Glibc
import HostControl
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
@_spi(FaultInjection) import Supervision

/// The entry point of `inetinfo worker`: one instance of one service, in a process of its own, driven by
/// the host over the control channel at descriptor 3 (``WorkerMessage``).
///
/// Contract: the worker waits for its start message (a spare may wait a long time), then builds the
/// service from the configuration in it, serves on the sockets at descriptors 4, 5, …, and reports
/// ready. It answers pings, stops gracefully on `stop` (exit 0), reports a failure it can see (then
/// exits 1), and dies with the host: the kernel sends it SIGKILL when the host ends, and EOF on the
/// channel makes it exit. It ignores SIGTERM, SIGINT and SIGHUP: the host alone decides when it stops.
extension InetinfoHost {
    /// Runs `inetinfo worker --service NAME --host-pid PID --log-level LEVEL`; returns the exit status.
    public static func runWorker(arguments: [String]) async -> Int32 {
        await WorkerProcess.run(arguments: arguments)
    }
}

enum WorkerProcess {
    /// The worker's exit status when its control channel closed under it.
    static let exitStatusChannelClosed: Int32 = 3

    static func run(arguments: [String]) async -> Int32 {
        var service = "worker"
        var hostPID: pid_t = 0
        var logLevel = "info"
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--service": service = iterator.next() ?? service
            case "--host-pid": hostPID = iterator.next().flatMap { pid_t($0) } ?? 0
            case "--log-level": logLevel = iterator.next() ?? logLevel
            default: break
            }
        }
        // The host may already be gone (it died between spawning us and this call): then so are we.
        _ = inetinfo_set_parent_death_signal(SIGKILL)
        guard hostPID > 0, getppid() == hostPID else { return 1 }
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { Glibc.signal(signal, SIG_IGN) }
        InetinfoHost.bootstrapLogging(level: logLevel)

        var logger = Logger(label: "inetinfo")
        logger[metadataKey: "service"] = "\(service)"
        logger[metadataKey: "workerPid"] = "\(getpid())"
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let worker = Worker(logger: logger)
        do {
            let channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    // Known before any message can arrive: the start message may be waiting already, and
                    // the instance's first report must find the channel.
                    worker.connect(channel)
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder(), maximumBufferSize: WorkerMessage.maximumLineLength))
                        try channel.pipeline.syncOperations.addHandler(WorkerChannelHandler(received: worker.received, closed: worker.hostGone))
                    }
                }
                .withConnectedSocket(WorkerDescriptors.control)
                .get()
            _ = channel
        } catch {
            logger.critical("worker cannot use its control channel", metadata: ["error": "\(error)"])
            return 1
        }
        return await worker.exitStatus()
    }
}

/// One worker's instance, between its control channel and an in-process instance.
private final class Worker: Sendable {
    private struct State {
        var channel: (any Channel)?
        var instance: InProcessInstance?
        var exit: CheckedContinuation<Int32, Never>?
        var exitStatus: Int32?
    }

    private let logger: Logger
    // Guards the channel, the instance and the exit: touched by the channel's loop and the instance's task.
    private let state = NIOLockedValueBox(State())

    init(logger: Logger) { self.logger = logger }

    func connect(_ channel: any Channel) {
        state.withLockedValue { $0.channel = channel }
    }

    func exitStatus() async -> Int32 {
        await withCheckedContinuation { continuation in
            let status = state.withLockedValue { state -> Int32? in
                if state.exitStatus == nil { state.exit = continuation }
                return state.exitStatus
            }
            if let status { continuation.resume(returning: status) }
        }
    }

    private func finish(_ status: Int32) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Int32, Never>? in
            guard state.exitStatus == nil else { return nil }
            state.exitStatus = status
            defer { state.exit = nil }
            return state.exit
        }
        waiter?.resume(returning: status)
    }

    private func send(_ message: WorkerMessage) -> EventLoopFuture<Void>? {
        guard let channel = state.withLockedValue({ $0.channel }) else { return nil }
        return channel.writeAndFlush(ByteBuffer(bytes: message.encodedLine()))
    }

    func received(_ message: WorkerMessage) {
        switch message {
        case .start(let start):
            begin(start)
        case .ping(let id):
            guard let instance = state.withLockedValue({ $0.instance }) else { return }
            instance.ping { _ = self.send(.pong(id)) }
        case .stop:
            state.withLockedValue { $0.instance }?.requestStop()
        case .fault(let fault, let livenessTimeoutMs):
            guard let instance = state.withLockedValue({ $0.instance }) else { return }
            let timeout = Duration.milliseconds(livenessTimeoutMs)
            logger.warning("injecting fault", metadata: ["fault": "\(fault.rawValue)", "instance": "\(instance.context.number)"])
            do {
                try FaultInjector.apply(fault, to: instance.context, livenessTimeout: timeout)
            } catch {
                logger.warning("fault not applied", metadata: ["fault": "\(fault.rawValue)", "error": "\(error)"])
            }
        case .ready, .failed, .pong:
            break  // worker-to-host messages
        }
    }

    /// The host is gone, or gave up on this worker (EOF on the channel): nothing may outlive it. The
    /// status says it was no normal end.
    func hostGone() {
        logger.notice("host closed the control channel; worker exiting")
        Glibc._exit(WorkerProcess.exitStatusChannelClosed)
    }

    private func begin(_ start: WorkerStart) {
        guard state.withLockedValue({ $0.instance == nil }) else { return }
        var instanceLogger = logger
        instanceLogger[metadataKey: "instance"] = "\(start.instance)"
        guard let entry = ServiceCatalog.entries.first(where: { $0.name == start.service }) else {
            return fail("no service named '\(start.service)' in this binary", logger: instanceLogger)
        }
        let sockets: [ListeningSocket]
        let hosted: any HostedService
        do {
            sockets = try start.sockets.enumerated().map { index, socket in
                try ListeningSocket.adopt(name: socket.name, fd: WorkerDescriptors.firstSocket + Int32(index))
            }
            let context = ServiceContext(options: start.options, stateDirectory: start.stateDirectory, threads: start.threads,
                                         hostName: start.hostName,
                                         services: start.services.map { ($0.name, $0.enabled, $0.listen) },
                                         inWorkerProcess: true)
            var made = try entry.make(context)
            if let delay = start.readinessDelayMs { made = DelayedReadiness(inner: made, delay: .milliseconds(delay)) }
            hosted = made
        } catch {
            return fail("cannot build \(start.service): \(error)", logger: instanceLogger)
        }
        let spec = InstanceSpec(service: start.service, number: start.instance, sockets: sockets, logger: instanceLogger)
        let instance = InProcessRunner(service: hosted).launch(spec) { event in
            switch event {
            case .ready: _ = self.send(.ready)
            case .failed(let reason): _ = self.send(.failed(reason))
            }
        }
        guard let instance = instance as? InProcessInstance else { return }
        state.withLockedValue { $0.instance = instance }
        Task {
            switch await instance.ended() {
            case .returned:
                self.finish(0)
            case .threw(let reason):
                self.fail(reason, logger: instanceLogger)
            case .exited, .signaled:
                self.finish(1)
            }
        }
    }

    /// Tells the host why, then exits 1 (the host may already know: a reported failure is not repeated
    /// harmfully, the host ignores reports about an instance it has already let go of).
    private func fail(_ reason: String, logger: Logger) {
        logger.error("worker failing", metadata: ["reason": "\(reason)"])
        guard let sent = send(.failed(reason)) else { return finish(1) }
        sent.whenComplete { _ in self.finish(1) }
    }
}

/// Fault injection (`slow-start`) in a worker: the instance's ready report goes out late.
private struct DelayedReadiness: HostedService {
    let inner: any HostedService
    let delay: Duration
    var name: String { inner.name }

    func run(_ context: InstanceContext) async throws {
        context.delayReadiness(by: delay)
        try await inner.run(context)
    }
}
