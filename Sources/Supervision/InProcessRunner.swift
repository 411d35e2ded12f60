import CoreMetrics
import Glibc
import NIOConcurrencyHelpers
import NIOCore

/// Runs each instance of a service as a task in this process (the `isolated` and `shared` modes).
///
/// Contains what Swift can throw and what hangs (an abandoned instance's threads stay blocked), not a
/// trap or a crash: those end the whole process.
public struct InProcessRunner: InstanceRunner {
    public let service: any HostedService
    public let forensics: InstanceForensics?
    /// Given to every instance (``InstanceContext/metrics``).
    public let metrics: any MetricsFactory
    /// Event loops for the next instances: started ahead of need, or handed on by an instance that ended.
    let spareLoops: SpareLoopGroup?

    /// - Parameter keepsSpareLoops: whether instances hand their event loops on to their successors and
    ///   one group is kept started ahead of need (``SpareLoopGroup``), so that a restart does not wait for
    ///   threads to start. A runner that launches one instance only (a worker process) keeps none.
    public init(service: any HostedService, forensics: InstanceForensics? = nil,
                metrics: any MetricsFactory = NOOPMetricsHandler.instance, keepsSpareLoops: Bool = true) {
        self.service = service
        self.forensics = forensics
        self.metrics = metrics
        spareLoops = keepsSpareLoops ? SpareLoopGroup() : nil
    }

    public func launch(_ spec: InstanceSpec, events: @escaping @Sendable (InstanceEvent) -> Void) -> any InstanceHandle {
        let context = InstanceContext(service: spec.service, number: spec.number, sockets: spec.sockets,
                                      logger: spec.logger,
                                      flightRecorder: forensics?.makeRecorder(service: spec.service, instance: spec.number,
                                                                              logger: spec.logger),
                                      quarantine: forensics?.quarantine, metrics: metrics, spareLoops: spareLoops,
                                      events: events)
        let service = self.service
        let task = Task.detached { () -> InstanceEnd in
            do {
                try await service.run(context)
                return .returned
            } catch let failure as InstanceFailure {
                return .threw(reason: failure.reason)
            } catch {
                return .threw(reason: String(describing: error))
            }
        }
        return InProcessInstance(context: context, task: task)
    }

    public func shutDown() {
        spareLoops?.shutDown()
    }
}

/// An instance running as a task of this process.
public struct InProcessInstance: InstanceHandle {
    /// The instance's side of the supervision protocol; fault injection acts through it.
    public let context: InstanceContext
    let task: Task<InstanceEnd, Never>

    public var pid: Int32 { getpid() }
    public var forcedStopIsCertain: Bool { false }

    /// Every event loop the instance reported must run a no-op; the answer comes when all have.
    public func ping(answered: @escaping @Sendable () -> Void) {
        let pings = context.withLiveEventLoops { eventLoops in eventLoops.map { $0.submit {} } }
        guard !pings.isEmpty else { return answered() }
        // Counted down on the instance's own loops: a hung loop never answers, and nothing else waits for it.
        let remaining = NIOLockedValueBox(pings.count)
        for ping in pings {
            ping.whenComplete { _ in
                let last = remaining.withLockedValue { count -> Bool in
                    count -= 1
                    return count == 0
                }
                if last { answered() }
            }
        }
    }

    public func requestStop() { context.requestStop() }
    public func forceStop() { context.forceStop() }
    public func ended() async -> InstanceEnd { await task.value }
}
