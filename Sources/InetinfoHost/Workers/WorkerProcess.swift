import CProcessControl
import CoreMetrics
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
/// Contract: the worker builds its service from the configuration in its first message (`prepare`), then
/// waits for its start message (a spare may wait a long time), serves on the sockets at descriptors 4,
/// 5, …, and reports ready. It answers pings, stops gracefully on `stop` (exit 0), reports a failure it can see (then
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
        var journal = false
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            switch argument {
            case "--service": service = iterator.next() ?? service
            case "--host-pid": hostPID = iterator.next().flatMap { pid_t($0) } ?? 0
            case "--log-level": logLevel = iterator.next() ?? logLevel
            case "--log-journal": journal = true
            default: break
            }
        }
        // The host may already be gone (it died between spawning us and this call): then so are we.
        _ = inetinfo_set_parent_death_signal(SIGKILL)
        guard hostPID > 0, getppid() == hostPID else { return 1 }
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { Glibc.signal(signal, SIG_IGN) }
        InetinfoHost.bootstrapLogging(level: logLevel, journal: journal)

        var logger = Logger(label: "inetinfo")
        logger[metadataKey: "service"] = "\(service)"
        logger[metadataKey: "workerPid"] = "\(getpid())"
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let worker = Worker(logger: logger, hostPID: hostPID)
        do {
            _ = try await ClientBootstrap(group: group)
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
        } catch {
            logger.critical("worker cannot use its control channel", metadata: ["error": "\(error)"])
            return 1
        }
        return await worker.exitStatus()
    }
}

/// One worker's instance, between its control channel and an in-process instance.
private final class Worker: Sendable {
    /// What `prepare` built: the service and its sockets, or why that failed (told at `start`).
    private struct Prepared {
        var configuration: WorkerConfiguration
        var built: Result<(service: any HostedService, sockets: [ListeningSocket]), WorkerFailure>
    }

    private struct State {
        var channel: (any Channel)?
        var prepared: Prepared?
        var instance: InProcessInstance?
        /// The protocol allows one failure report per worker.
        var failureSent = false
        var exit: CheckedContinuation<Int32, Never>?
        var exitStatus: Int32?
    }

    private let logger: Logger
    private let hostPID: pid_t
    /// The host's quarantine, as this worker's instance consults it.
    private let quarantine = PeerQuarantine()
    // Guards the channel, what was prepared, the instance and the exit: touched by the channel's loop and
    // the instance's task.
    private let state = NIOLockedValueBox(State())

    init(logger: Logger, hostPID: pid_t) {
        self.logger = logger
        self.hostPID = hostPID
    }

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
        case .prepare(let configuration):
            prepare(configuration)
        case .start(let instance, let readinessDelayMs):
            begin(instance: instance, readinessDelay: readinessDelayMs.map { .milliseconds($0) })
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
        case .quarantine(let addresses):
            quarantine.replace(with: Set(addresses))
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

    /// Builds the service before it is needed (a spare does it while it waits).
    private func prepare(_ configuration: WorkerConfiguration) {
        guard state.withLockedValue({ $0.prepared == nil }) else { return }
        quarantine.replace(with: Set(configuration.quarantine))
        let built = Result { () throws(WorkerFailure) -> (service: any HostedService, sockets: [ListeningSocket]) in
            guard let entry = ServiceCatalog.entries.first(where: { $0.name == configuration.service }) else {
                throw WorkerFailure("no service named '\(configuration.service)' in this binary")
            }
            do {
                let sockets = try configuration.sockets.enumerated().map { index, socket in
                    try ListeningSocket.adopt(name: socket.name, fd: WorkerDescriptors.firstSocket + Int32(index))
                }
                let context = ServiceContext(options: configuration.options, stateDirectory: configuration.stateDirectory,
                                             threads: configuration.threads, hostName: configuration.hostName,
                                             services: configuration.services.map { ($0.name, $0.enabled, $0.listen) },
                                             inWorkerProcess: true)
                return (try entry.make(context), sockets)
            } catch {
                throw WorkerFailure("cannot build \(configuration.service): \(error)")
            }
        }
        state.withLockedValue { $0.prepared = Prepared(configuration: configuration, built: built) }
    }

    private func begin(instance number: Int, readinessDelay: Duration?) {
        var instanceLogger = logger
        instanceLogger[metadataKey: "instance"] = "\(number)"
        let prepared = state.withLockedValue { state -> Prepared?? in
            guard state.instance == nil else { return .none }
            return .some(state.prepared)
        }
        guard let prepared else { return }  // a second start: ignored
        guard let prepared else { return fail("started before it was prepared", logger: instanceLogger) }
        let hosted: any HostedService
        let sockets: [ListeningSocket]
        switch prepared.built {
        case .success(let built): (hosted, sockets) = built
        case .failure(let failure): return fail(failure.reason, logger: instanceLogger)
        }
        let service = ReadinessDelaying(inner: hosted) { readinessDelay }
        let spec = InstanceSpec(service: prepared.configuration.service, number: number, sockets: sockets, logger: instanceLogger)
        let forensics = InstanceForensics(
            flightRecorders: prepared.configuration.flightRecorderDirectory.map(FlightRecorderDirectory.init(path:)),
            hostPid: hostPID, quarantine: quarantine)
        var metrics: any MetricsFactory = NOOPMetricsHandler.instance
        if let path = prepared.configuration.figuresFile {
            do {
                metrics = try FigureRecorder(path: path)
            } catch {
                instanceLogger.warning("counting nothing: the figure file cannot be used", metadata: ["error": "\(error)"])
            }
        }
        let instance = InProcessRunner(service: service, forensics: forensics, metrics: metrics, keepsSpareLoops: false).launch(spec) { event in
            switch event {
            case .ready: _ = self.send(.ready)
            case .failed(let reason): self.reportFailure(reason)
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

    /// Sends the failure report, the first time only (the protocol allows one).
    @discardableResult
    private func reportFailure(_ reason: String) -> EventLoopFuture<Void>? {
        guard state.withLockedValue({ state -> Bool in
            defer { state.failureSent = true }
            return !state.failureSent
        }) else { return nil }
        return send(.failed(reason))
    }

    /// Tells the host why (unless the instance already did), then exits 1.
    private func fail(_ reason: String, logger: Logger) {
        logger.error("worker failing", metadata: ["reason": "\(reason)"])
        guard let sent = reportFailure(reason) else { return finish(1) }
        sent.whenComplete { _ in self.finish(1) }
    }
}

/// Why a worker could not serve.
private struct WorkerFailure: Error {
    var reason: String
    init(_ reason: String) { self.reason = reason }
}
