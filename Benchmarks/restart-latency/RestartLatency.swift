// Restart latency of the in-process supervisor: from an injected failure of the `http` service to
// the port serving a request again, while a client connects in a loop and counts refusals.
// Usage: swift run -c release restart-latency [INJECTIONS]   (see docs/benchmarks.md)
import Foundation
import HTTPService
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import Supervision

@main
enum RestartLatency {
    static func main() async throws {

        let injections = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 200
        let webRoot = FileManager.default.temporaryDirectory.appendingPathComponent("restart-latency-\(getpid())")
        try FileManager.default.createDirectory(at: webRoot, withIntermediateDirectories: true)
        try Data("ok\n".utf8).write(to: webRoot.appendingPathComponent("index.html"))
        defer { try? FileManager.default.removeItem(at: webRoot) }

        var settings = SupervisionSettings()
        settings.backoffInitial = .zero
        settings.backoffMax = .zero
        settings.maxRestarts = injections * 2
        let socket = try ListeningSocket.bind(name: "http", endpoint: "127.0.0.1:0")
        let port = UInt16(socket.address.split(separator: ":").last!)!
        let service = HTTPService(settings: try HTTPSettings(options: ["web-root": webRoot.path], hostName: "bench", services: []))
        var logger = Logger(label: "restart-latency")
        logger.logLevel = .critical
        let supervisor = Supervisor(services: [ServiceRegistration(service: service, settings: settings, sockets: [socket])],
                                    isolation: .isolated, eventLoop: MultiThreadedEventLoopGroup(numberOfThreads: 1).next(),
                                    logger: logger)
        let (_, events) = supervisor.events.subscribe()
        var iterator = events.makeAsyncIterator()
        let run = Task { try await supervisor.run() }

        let counts = NIOLockedValueBox(ClientCounts())
        let stop = NIOLockedValueBox(false)
        let client = Thread {
            while !stop.withLockedValue({ $0 }) {
                let result = request(port: port)
                counts.withLockedValue {
                    switch result {
                    case nil: $0.served += 1
                    case ECONNREFUSED: $0.refused += 1
                    default: $0.failed += 1
                    }
                }
            }
        }


        await waitForRunning(&iterator, instance: 1)
        client.start()
        var latencies: [Duration] = []
        for injection in 1...injections {
            let started = ContinuousClock.now
            guard let instance = try await supervisor.runningInstance(of: "http") as? InProcessInstance else {
                fatalError("http is not running in process")
            }
            instance.context.fail(InstanceFailure("benchmark: injected failure"))
            await waitForRunning(&iterator, instance: injection + 1)
            if let failure = request(port: port) { fatalError("request after restart \(injection) failed: \(String(cString: strerror(failure)))") }
            latencies.append(ContinuousClock.now - started)
        }
        stop.withLockedValue { $0 = true }
        await supervisor.shutdown()
        _ = try await run.value

        latencies.sort()
        let final = counts.withLockedValue { $0 }
        print("injections: \(injections)")
        print("restart latency (failure injected → port serves again): p50 \(milliseconds(latencies[latencies.count / 2])) ms, p99 \(milliseconds(latencies[Int(Double(latencies.count) * 0.99) - 1])) ms, max \(milliseconds(latencies.last!)) ms")
        print("background client: \(final.served) served, \(final.refused) refused, \(final.failed) failed (connections cut by a failing instance)")

    }
}

/// Outcome counts of the background client (guarded by the lock).
struct ClientCounts { var served = 0, refused = 0, failed = 0 }

/// One GET with Connection: close. Returns nil on success, or the errno that ended it.
func request(port: UInt16) -> Int32? {
    let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { return errno }
    let get = Array("GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".utf8)
    guard write(fd, get, get.count) == get.count else { return errno }
    var buffer = [UInt8](repeating: 0, count: 1024)
    var response: [UInt8] = []
    while true {
        let count = read(fd, &buffer, buffer.count)
        if count < 0 { return errno }
        if count == 0 { break }
        response += buffer[..<count]
    }
    return String(decoding: response.prefix(15), as: UTF8.self) == "HTTP/1.1 200 OK" ? nil : EPROTO
}

func milliseconds(_ duration: Duration) -> String {
    String(format: "%.2f", Double(duration.components.attoseconds) / 1e15 + Double(duration.components.seconds) * 1000)
}

func waitForRunning(_ iterator: inout AsyncStream<SupervisorEvent>.Iterator, instance: Int) async {
    while let event = await iterator.next() {
        if event.to == .running && event.instance == instance { return }
    }
}
