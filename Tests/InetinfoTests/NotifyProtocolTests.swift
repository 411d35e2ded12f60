import Foundation
import InetinfoTestKit
import NIOConcurrencyHelpers
import Testing

/// A datagram socket standing in for systemd's NOTIFY_SOCKET; records every message with its arrival time.
final class NotifyListener: Sendable {
    struct Message: Sendable {
        var at: ContinuousClock.Instant
        var lines: [String]
    }

    let path: String
    private let fd: Int32
    // Guards the messages received so far; written by the reader thread, read by the test.
    private let received = NIOLockedValueBox<[Message]>([])

    /// Binds a datagram socket in a new temporary directory (removed by ``close()``).
    init() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-notify-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        path = directory.appendingPathComponent("notify.sock").path
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        fd = descriptor
        let bound = withUnixAddress(path) { bind(descriptor, $0, $1) }
        guard bound == 0 else { throw TestError("bind \(path): \(String(cString: strerror(errno)))") }
        let fd = self.fd
        let received = self.received
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count <= 0 { return }
                let lines = String(decoding: buffer[..<count], as: UTF8.self).split(separator: "\n").map(String.init)
                received.withLockedValue { $0.append(Message(at: .now, lines: lines)) }
            }
        }
    }

    var messages: [Message] { received.withLockedValue { $0 } }

    func times(of line: String) -> [ContinuousClock.Instant] {
        messages.filter { $0.lines.contains(line) }.map(\.at)
    }

    func statusLines() -> [String] {
        messages.flatMap(\.lines).filter { $0.hasPrefix("STATUS=") }
    }

    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
        try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent)
    }
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct NotifyProtocolTests {
    @Test func readyWatchdogStatusAndWedgedPingsFollowTheSupervisor() async throws {
        let notify = try NotifyListener()
        defer { notify.close() }
        // WATCHDOG_USEC=400 ms: pings every 200 ms.
        try await withHost(["--enable-fault-injection"], environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"]) { host in
            let ready = try await Deadline.eventually("READY=1", timeout: .seconds(20)) { notify.messages.first { $0.lines.contains("READY=1") } }
            #expect(ready.lines.contains("STATUS=smtp: running, http: running"))
            #expect(try host.status().host.watchdogUsec == 400_000)

            let pings = try await Deadline.eventually("five watchdog pings", timeout: .seconds(10)) {
                let times = notify.times(of: "WATCHDOG=1")
                return times.count >= 5 ? times : nil
            }
            let gaps = zip(pings.dropFirst(), pings).map { $0 - $1 }.sorted()
            let median = gaps[gaps.count / 2]
            #expect(median > .milliseconds(100) && median < .milliseconds(400), "median ping gap \(median), expected about 200 ms")

            #expect(try host.ctl(["crash", "smtp", "--mode", "throw"]).status == 0)
            _ = try await Deadline.eventually("STATUS after the restart", timeout: .seconds(10)) {
                notify.statusLines().contains("STATUS=smtp: running (1 restart), http: running") ? true : nil
            }

            let wedged = ContinuousClock.now
            #expect(try host.ctl(["crash", "host", "--mode", "hang"]).status == 0)
            // The supervisor's loop is blocked: within about a second the pings stop (a tick older than
            // max(1 s, WATCHDOG_USEC/4) withholds them; one ping period, 200 ms, and slack on top).
            let lastPing = try await Deadline.eventually("watchdog pings to stop", timeout: .seconds(10)) { () -> ContinuousClock.Instant? in
                guard let last = notify.times(of: "WATCHDOG=1").last else { return nil }
                return ContinuousClock.now - last > .milliseconds(1500) ? last : nil
            }
            #expect(lastPing - wedged < .milliseconds(1700), "pings went on \(lastPing - wedged) after the wedge")
            // For good: a later window, well past the watchdog interval, brings none either.
            try await Task.sleep(for: .seconds(1))
            let later = notify.times(of: "WATCHDOG=1").filter { $0 > lastPing }
            #expect(later.isEmpty, "\(later.count) pings after the silence began")
            host.signal(SIGKILL)
        }
    }

    /// docs/supervision.md: `WATCHDOG=1` only while no more than `supervisor.max-abandoned` instances were
    /// abandoned. One hung SMTP instance is abandoned and replaced: with a limit of 0 the pings stop for
    /// good and `status --json` says the host is degraded and why; with a limit of 1 (the same hang, the
    /// same watch) they go on and nothing is reported, so it is the limit that stops them, not the hang.
    @Test(arguments: [0, 1])
    func pingsStopOnceMoreInstancesThanMaxAbandonedWereAbandoned(maxAbandoned: Int) async throws {
        let notify = try NotifyListener()
        defer { notify.close() }
        // WATCHDOG_USEC=400 ms: pings every 200 ms. A hang is detected after 300 ms.
        try await withHost(["--enable-fault-injection", "--set", "supervisor.max-abandoned=\(maxAbandoned)",
                            "--set", "smtp.liveness-timeout=300", "--set", "http.enabled=false"],
                           environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"]) { host in
            _ = try await Deadline.eventually("READY=1", timeout: .seconds(20)) { notify.times(of: "READY=1").first }
            _ = try await Deadline.eventually("three watchdog pings", timeout: .seconds(10)) {
                notify.times(of: "WATCHDOG=1").count >= 3 ? true : nil
            }

            #expect(try host.ctl(["crash", "smtp", "--mode", "hang"]).status == 0)
            try await host.waitForState("smtp", .running, instance: 2)
            let replaced = ContinuousClock.now

            if maxAbandoned == 0 {
                // Five ping periods without a ping: they stopped.
                let lastPing = try await Deadline.eventually("watchdog pings to stop", timeout: .seconds(10)) { () -> ContinuousClock.Instant? in
                    guard let last = notify.times(of: "WATCHDOG=1").last else { return nil }
                    return ContinuousClock.now - last > .seconds(1) ? last : nil
                }
                let info = try Self.statusJSON(host)
                #expect(info.degraded == true, "status --json: degraded \(String(describing: info.degraded))")
                #expect(info.problem?.isEmpty == false, "status --json: supervisorProblem \(String(describing: info.problem))")
                // For good: a later window of observation, five more periods, brings none either.
                try await Task.sleep(for: .seconds(1))
                let later = notify.times(of: "WATCHDOG=1").filter { $0 > lastPing }
                #expect(later.isEmpty, "\(later.count) pings after the silence began")
            } else {
                // The same hang within the limit: pings go on (five periods' worth after the replacement).
                _ = try await Deadline.eventually("pings after the hang", timeout: .seconds(5)) {
                    notify.times(of: "WATCHDOG=1").filter { $0 > replaced }.count >= 5 ? true : nil
                }
                let info = try Self.statusJSON(host)
                #expect(info.degraded == false)
                #expect(info.problem == nil, "status --json: supervisorProblem \(String(describing: info.problem))")
            }
        }
    }

    /// `degraded` and `supervisorProblem` (nil when JSON null) of `inetinfoctl status --json`.
    static func statusJSON(_ host: TestHost) throws -> (degraded: Bool?, problem: String?) {
        let result = try host.ctl(["status", "--json"])
        guard let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
              let info = object["host"] as? [String: Any], info.keys.contains("supervisorProblem")
        else { throw TestError("status --json: \(result.stdout)\(result.stderr)") }
        return (info["degraded"] as? Bool, info["supervisorProblem"] as? String)
    }

    @Test func stoppingIsSentOnSIGTERMAndTheHostExitsCleanly() async throws {
        let notify = try NotifyListener()
        defer { notify.close() }
        try await withHost(environment: ["NOTIFY_SOCKET": notify.path]) { host in
            _ = try await Deadline.eventually("READY=1", timeout: .seconds(20)) { notify.times(of: "READY=1").first }
            #expect(notify.times(of: "WATCHDOG=1").isEmpty, "no watchdog armed, no pings")
            host.signal(SIGTERM)
            let (status, reason) = try await host.waitForExit()
            #expect(reason == .exit && status == 0)
            #expect(!notify.times(of: "STOPPING=1").isEmpty)
        }
    }

    @Test func reloadSendsReloadingWithMonotonicUsecThenReady() async throws {
        let notify = try NotifyListener()
        defer { notify.close() }
        try await withHost(environment: ["NOTIFY_SOCKET": notify.path]) { host in
            _ = try await Deadline.eventually("READY=1", timeout: .seconds(20)) { notify.times(of: "READY=1").first }
            host.signal(SIGHUP)
            let reloading = try await Deadline.eventually("RELOADING=1", timeout: .seconds(10)) {
                notify.messages.first { $0.lines.contains("RELOADING=1") }
            }
            #expect(reloading.lines.contains { $0.hasPrefix("MONOTONIC_USEC=") && UInt64($0.dropFirst(15)) != nil })
            _ = try await Deadline.eventually("READY=1 after the reload", timeout: .seconds(10)) {
                notify.times(of: "READY=1").count >= 2 ? true : nil
            }
            let reply = try host.ctl(["reload"])
            #expect(reply.status == 0)
            #expect(reply.stdout.contains("configuration reloaded"))
        }
    }
}
