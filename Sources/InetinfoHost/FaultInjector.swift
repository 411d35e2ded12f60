import Glibc
import HostControl
import Logging
import NIOConcurrencyHelpers
import NIOCore
@_spi(FaultInjection) import Supervision

/// Breaks things on purpose (`inetinfoctl crash`): a host concern, kept out of the generic supervisor,
/// which it reaches only through the running instance's handle.
///
/// Contract: faults are injected only on a host started with fault injection enabled (the caller checks);
/// a fault is applied to the running instance of a service, or to the host itself (`hang`, `trap`).
final class FaultInjector: Sendable {
    private let logger: Logger
    /// Services whose next instance reports ready late (`slow-start`), with the delay. Guarded because
    /// the control handler writes it and the services' instances read it.
    private let slowStarts = NIOLockedValueBox<[String: Duration]>([:])

    init(logger: Logger) {
        self.logger = logger
    }

    /// Wraps a service so that `slow-start` can act on its next instance.
    func instrument(_ service: any HostedService) -> any HostedService {
        ReadinessDelaying(inner: service) { [name = service.name] in self.takeSlowStart(of: name) }
    }

    /// The readiness delay the next instance of `service` must have, once (`slow-start`).
    func takeSlowStart(of service: String) -> Duration? {
        slowStarts.withLockedValue { $0.removeValue(forKey: service) }
    }

    /// Injects `fault` into the running instance of `service`: directly when it runs in this process, over
    /// its control channel when it runs in a worker.
    func inject(_ fault: Fault, into service: String, of supervisor: Supervisor) async throws {
        let handle = try await supervisor.runningInstance(of: service)
        logger.warning("injecting fault", metadata: ["service": "\(service)", "fault": "\(fault.rawValue)", "pid": "\(handle.pid)"])
        if fault == .slowStart {
            let settings = try await supervisor.settings(of: service)
            slowStarts.withLockedValue { $0[service] = settings.startupTimeout + .seconds(1) }
        }
        switch handle {
        case let instance as InProcessInstance:
            guard instance.context.hasEventLoops else {
                throw SupervisorError.notRunning(service, state: try await supervisor.snapshot(of: service).state)
            }
            let timeout = try await supervisor.settings(of: service).livenessTimeout
            try Self.apply(fault, to: instance.context, livenessTimeout: timeout)
        case let worker as WorkerInstance:
            worker.inject(fault, livenessTimeout: try await supervisor.settings(of: service).livenessTimeout)
        default:
            throw FaultError("\(service) runs where faults cannot reach it")
        }
    }

    /// What a fault does to an instance, in the process that runs it (the host's, or a worker's).
    static func apply(_ fault: Fault, to context: InstanceContext, livenessTimeout: Duration) throws {
        let service = context.service
        let number = context.number
        switch fault {
        case .throw:
            context.fail(InstanceFailure("injected fault: throw"))
        case .hang:
            context.withLiveEventLoops { eventLoops in
                for eventLoop in eventLoops { eventLoop.execute { Self.blockForever() } }
            }
        case .stall:
            let duration = livenessTimeout * 3
            context.withLiveEventLoops { eventLoops in
                for eventLoop in eventLoops { eventLoop.execute { Self.block(for: duration) } }
            }
        case .listener:
            guard context.closeListeners() else { throw FaultError("\(service) has no listeners to close") }
        case .slowStart:
            context.fail(InstanceFailure("injected fault: slow-start"))
        case .trap, .segv, .abort, .exit:
            context.withLiveEventLoops { eventLoops in
                // A short delay lets the request that asked for the crash be answered first.
                _ = eventLoops.first?.scheduleTask(in: .milliseconds(100)) {
                    Self.crash(fault, what: "\(service) instance \(number)")
                }
            }
        }
    }

    /// Ends this process the way `fault` says.
    static func crash(_ fault: Fault, what: String) {
        switch fault {
        case .segv:
            // A real invalid access (not a Swift trap): a store to an address no process maps.
            let address = UnsafeMutablePointer<Int>(bitPattern: 0x10)
            address?.pointee = 1
        case .abort:
            Glibc.abort()
        case .exit:
            Glibc.exit(1)
        default:
            fatalError("injected fault: \(fault.rawValue) in \(what)")
        }
        fatalError("injected fault: \(fault.rawValue) in \(what) did not end the process")
    }

    /// Breaks the host itself; returns what the operator is told. The effect comes a moment later, so
    /// that the answer goes out first.
    func injectIntoHost(_ fault: Fault, supervisor: Supervisor) throws -> String {
        logger.critical("crash of the host requested", metadata: ["mode": "\(fault.rawValue)"])
        switch fault {
        case .hang:
            // Nothing is supervised any more and the systemd watchdog pings stop: the outer tier must recover.
            let logger = self.logger
            _ = supervisor.eventLoop.scheduleTask(in: .milliseconds(100)) {
                logger.critical("supervisor wedged on request; watchdog pings stop")
                Self.blockForever()
            }
            return "host wedging: the supervisor stops and systemd watchdog pings end"
        case .trap, .segv, .abort, .exit:
            _ = supervisor.eventLoop.scheduleTask(in: .milliseconds(100)) {
                Self.crash(fault, what: "the host")
            }
            return "host crashing (\(fault.rawValue)): the process dies"
        case .throw, .stall, .listener, .slowStart:
            throw FaultError("crash host supports --mode hang, trap, segv, abort or exit")
        }
    }

    /// What a hung thread does: never return. The thread is lost; see ``SupervisorHealth``.
    static func blockForever() -> Never {
        while true { sleep(3600) }
    }

    /// A transient hang: the thread is stuck, then comes back.
    static func block(for duration: Duration) {
        let (seconds, attoseconds) = duration.components
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 { request = remaining }
    }
}

/// Fault injection (`slow-start`): a hosted service whose instance's ready report goes out late when
/// `delay` says so (asked once per instance, before it runs). In the host, the delay comes from the
/// injector; in a worker, from its start message.
struct ReadinessDelaying: HostedService {
    let inner: any HostedService
    let delay: @Sendable () -> Duration?

    var name: String { inner.name }

    func run(_ context: InstanceContext) async throws {
        if let delay = delay() { context.delayReadiness(by: delay) }
        try await inner.run(context)
    }
}

/// A fault that cannot be injected as asked.
struct FaultError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
