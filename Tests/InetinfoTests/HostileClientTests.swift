import Foundation
import HostControl
import InetinfoTestKit
import Testing

// MARK: - Hostile clients: helpers

enum HostileSupport {
    /// Resident and peak resident memory of a process, in bytes (VmRSS and VmHWM of /proc/PID/status).
    static func memory(of pid: Int32) -> (rss: Int, peak: Int) {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
        func field(_ name: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }),
                  let kilobytes = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
            else { return 0 }
            return kilobytes * 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    static func mib(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }

    /// A web root for the hostile probes: an index at the root (so `GET /` is 200), a small file, two
    /// directories (`docs`, `evil.example`), a FIFO and, when asked, a sparse 50 MiB file.
    struct WebRoot {
        let url: URL
        static let bigSize = 50 * 1024 * 1024

        init(big: Bool = false) throws {
            url = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-hostile-www-\(UUID().uuidString.prefix(8))")
            let manager = FileManager.default
            for directory in ["docs", "evil.example"] {
                try manager.createDirectory(at: url.appendingPathComponent(directory), withIntermediateDirectories: true)
                try Data("<h1>\(directory)</h1>\n".utf8).write(to: url.appendingPathComponent("\(directory)/index.html"))
            }
            try Data("<h1>hostile</h1>\n".utf8).write(to: url.appendingPathComponent("index.html"))
            try Data("hello, web\n".utf8).write(to: url.appendingPathComponent("hello.txt"))
            guard mkfifo(url.appendingPathComponent("fifo").path, 0o644) == 0 else {
                throw TestHostError("mkfifo: \(String(cString: strerror(errno)))")
            }
            if big {
                let fd = open(url.appendingPathComponent("big50.bin").path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                guard fd >= 0, ftruncate(fd, off_t(Self.bigSize)) == 0 else { throw TestHostError("cannot create big50.bin") }
                close(fd)
            }
        }

        func remove() { try? FileManager.default.removeItem(at: url) }
    }

    /// Runs `body` with a host (both services on) from `arguments`, once every service runs; passes the
    /// host, its pid and the HTTP and SMTP ports.
    static func withServingHost(_ arguments: [String] = [], webRoot: WebRoot? = nil,
                                _ body: (TestHost, Int32, _ http: Int, _ smtp: Int) async throws -> Void) async throws {
        let extra = webRoot.map { ["--web-root", $0.url.path] } ?? []
        try await withHost(arguments + extra, environment: ["SWIFT_BACKTRACE": "enable=no"]) { host in
            let status = try await host.waitUntilRunning()
            let pid = host.pid
            try await body(host, pid, try host.port(of: "http", in: status), try host.port(of: "smtp", in: status))
        }
    }

    /// The check after every group of probes: the same process still runs, `GET /` is 200 and SMTP greets
    /// with 220.
    static func expectServing(_ host: TestHost, pid: Int32, http: Int, smtp: Int, after group: String,
                              sourceLocation: SourceLocation = #_sourceLocation) async {
        guard host.isRunning else {
            Issue.record("after \(group): the host exited; its log (access-log lines left out):\n\(hostLog(host))",
                         sourceLocation: sourceLocation)
            return
        }
        #expect(host.pid == pid, "after \(group): a different process", sourceLocation: sourceLocation)
        func get() -> String {
            do {
                let client = try TestSocket(port: http)
                try client.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                let (text, end) = client.readText(timeout: .seconds(5))
                return text.isEmpty ? "nothing (\(end))" : text
            } catch {
                return "\(error)"
            }
        }
        let answer = get()
        if !answer.hasPrefix("HTTP/1.1 200 ") {
            // How long until it answers again, if it does (up to 15 s more), for the report.
            let started = ContinuousClock.now
            var later = ""
            let recovered = (try? await Deadline.eventually("GET / to answer 200 again", timeout: .seconds(15)) { () -> Bool? in
                later = get()
                return later.hasPrefix("HTTP/1.1 200 ") ? true : nil
            }) != nil
            let recovery = recovered ? "200 again after \(ContinuousClock.now - started) more" : "still \(later.prefix(60).debugDescription) 15 s later"
            Issue.record("after \(group): GET / answered \(answer.prefix(80).debugDescription) within 5 s; \(recovery); status: \(String(describing: try? host.status().services.map { "\($0.name) #\($0.instance) \($0.state)" }))\n\(hostLog(host, last: 6))",
                         sourceLocation: sourceLocation)
        }
        do {
            let client = try TestSocket(port: smtp)
            let (text, _) = client.readText(until: "\r\n", timeout: .seconds(5))
            #expect(text.hasPrefix("220 "), "after \(group): SMTP greeted \(text.prefix(80).debugDescription)",
                    sourceLocation: sourceLocation)
        } catch {
            Issue.record("after \(group): SMTP does not answer: \(error)", sourceLocation: sourceLocation)
        }
    }

    /// The host's log without access-log lines and backtrace frames: what it said about itself.
    static func hostLog(_ host: TestHost, last count: Int = 15) -> String {
        host.log.split(separator: "\n").filter { line in
            !(line.hasPrefix("127.0.0.") && line.contains(" - - [")) && !(line.contains(" 0x") && line.contains("<unavailable>"))
        }.suffix(count).map { "  | " + $0.prefix(400) }.joined(separator: "\n")
    }

    /// Every file in some `new/` under the state directory's mail folder.
    static func newFiles(_ host: TestHost) -> [String] {
        host.mailboxes().flatMap { host.deliveredMessages(to: $0).map(\.path) }
    }

    /// Directories under `<state>/mail/<domain>/` (as `local@domain`).
    static func mailboxDirectories(_ host: TestHost) -> Set<String> { Set(host.mailboxes()) }
}

/// Runs the `inetinfo` binary with `arguments` and waits at most `timeout` for it to exit; a process that
/// is still running then is killed (and reported as running).
struct BoundedRun {
    var exitStatus: Int32?
    var stderr: String
    var stdout: String

    static func run(_ arguments: [String], timeout: Duration = .seconds(8)) async throws -> BoundedRun {
        let binary = try TestHost.locateBinary()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-hostile-run-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outPath = directory.appendingPathComponent("out").path
        let errPath = directory.appendingPathComponent("err").path
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--state-dir", directory.appendingPathComponent("state").path,
            "--smtp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
            "--control-socket", directory.appendingPathComponent("c.sock").path,
        ] + arguments
        var environment = ProcessInfo.processInfo.environment
        for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            environment.removeValue(forKey: key)
        }
        environment["SWIFT_BACKTRACE"] = "enable=no"
        process.environment = environment
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        try process.run()
        let exited = (try? await Deadline.eventually("inetinfo to exit", timeout: timeout) { process.isRunning ? nil : true }) != nil
        var status: Int32?
        if !exited {
            kill(process.processIdentifier, SIGKILL)
            _ = try await Deadline.eventually("inetinfo to die of SIGKILL", timeout: .seconds(10)) { process.isRunning ? nil : true }
        } else {
            status = process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus
        }
        return BoundedRun(exitStatus: status,
                          stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "",
                          stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "")
    }
}

// MARK: - HTTP

@Suite(.serialized, .timeLimit(.minutes(3))) struct HostileClientTests {
    typealias Support = HostileSupport

    static let trapYears = ["99999999999", "-1", "2147483648", "00000000000000000001", "9223372036854775807",
                            "9223372036854775808", "18446744073709551616", "+1994", "0x7fffffff", "0"]

    /// The three HTTP date forms with `year` in the year's place.
    static func dateForms(year: String) -> [String] {
        ["Sun, 06 Nov \(year) 08:49:37 GMT", "Sunday, 06-Nov-\(year) 08:49:37 GMT", "Sun Nov  6 08:49:37 \(year)"]
    }

    /// Other fields too large for any integer type.
    static let trapDates = [
        "Sun, 99999999999 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 99999999999:49:37 GMT",
        "Sun, 06 Nov 1994 08:99999999999:37 GMT", "Sun, 06 Nov 1994 08:49:-99999999999 GMT",
        "Sunday, 99999999999-Nov-94 08:49:37 GMT", "Sunday, 06-Nov-94 99999999999:49:37 GMT",
        "Sun Nov 99999999999 08:49:37 1994", "Sun Nov  6 99999999999:49:37 1994",
        "Sun, -6 Nov 1994 -8:-49:-37 GMT", "Sun Nov  6 08:49:37 -2147483649",
    ]

    @Test func httpDatesWithTrapYearsAreIgnored() async throws {
        let root = try Support.WebRoot()
        defer { root.remove() }
        try await Support.withServingHost(webRoot: root) { host, pid, http, smtp in
            var failures: [String] = []
            let dates = Self.trapYears.flatMap(Self.dateForms(year:)) + Self.trapDates
            probes: for date in dates {
                let requests = [
                    ("If-Modified-Since", "GET /hello.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: \(date)\r\nConnection: close\r\n\r\n"),
                    ("If-Range", "GET /hello.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\nIf-Range: \(date)\r\nConnection: close\r\n\r\n"),
                ]
                for (field, request) in requests {
                    do {
                        let (text, _) = try TestSocket.exchange(port: http, request)
                        let status = statusLine(text)
                        if status != "HTTP/1.1 200 OK" || !text.hasSuffix("hello, web\n") {
                            failures.append("\(field): \(date) → \(status.isEmpty ? "no answer" : status)")
                        }
                    } catch {
                        failures.append("\(field): \(date) → \(error)")
                    }
                    if !host.isRunning {
                        failures.append("the host died after \(field): \(date)")
                        break probes
                    }
                }
            }
            #expect(failures.isEmpty, "\(failures.count) of \(dates.count * 2) date probes failed:\n\(failures.joined(separator: "\n"))")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the date traps")
            guard host.isRunning else { return }

            // Valid dates in the future, in each of the three forms: 304.
            for date in ["Fri, 01 Jan 2100 00:00:00 GMT", "Friday, 01-Jan-60 00:00:00 GMT", "Fri Jan  1 00:00:00 2100"] {
                let (text, _) = try TestSocket.exchange(port: http, "GET /hello.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: \(date)\r\nConnection: close\r\n\r\n")
                #expect(statusLine(text) == "HTTP/1.1 304 Not Modified", "If-Modified-Since: \(date)")
            }
            // And a valid date long past: 200.
            let (old, _) = try TestSocket.exchange(port: http, "GET /hello.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\n")
            #expect(statusLine(old) == "HTTP/1.1 200 OK")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the valid dates")
        }
    }

    /// Requests pipelined for tens of MiB while the client reads nothing: the host's memory must not hold
    /// the answers.
    /// Run twice: with the default liveness timeout (1 s), and with it raised to 15 s so that the memory
    /// figures hold for a whole flood even where a slow event loop gets its instance replaced.
    @Test(arguments: ["default", "15000"])
    func httpPipelinedFloodWithoutReadingKeepsMemoryBounded(livenessTimeout: String) async throws {
        let root = try Support.WebRoot()
        defer { root.remove() }
        let settings = livenessTimeout == "default" ? [] : ["--set", "supervisor.liveness-timeout=\(livenessTimeout)"]
        try await Support.withServingHost(settings, webRoot: root) { host, pid, http, smtp in
            print("[hostile] HTTP flood, liveness timeout \(livenessTimeout):")
            let before = Support.memory(of: pid)
            print("[hostile] HTTP flood: host RSS before \(Support.mib(before.rss)) (peak so far \(Support.mib(before.peak)))")
            let kinds = [
                ("HEAD /", "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"),
                ("GET 404", "GET /missing-\(UUID().uuidString.prefix(4)) HTTP/1.1\r\nHost: x\r\n\r\n"),
                ("GET 304", "GET /hello.txt HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n"),
            ]
            var clients: [TestSocket] = []
            var total = 0
            for (name, request) in kinds {
                guard host.isRunning else { break }
                let client: TestSocket
                do {
                    client = try TestSocket(port: http, receiveBuffer: 4096)
                } catch {
                    Issue.record("HTTP flood \(name): \(error); host \(host.isRunning ? "running" : "gone"), status \(String(describing: try? host.status().services.map { "\($0.name) instance \($0.instance) \($0.state)" }))")
                    continue
                }
                clients.append(client)
                let flood = client.flood(Array(request.utf8), total: 10 << 20, hostPID: pid, baselineRSS: before.rss)
                total += flood.sent
                print("[hostile] HTTP flood \(name): \(flood)")
                #expect(!flood.stopped.hasPrefix("the server closing"), "HTTP flood \(name): \(flood)")
            }
            let failures = ((try? host.events()) ?? []).filter { $0.to == .failed || $0.to == .backoff }
            #expect(failures.isEmpty && host.isRunning, "service failures during the flood:\n\(failures.map(StatusPresenter.line).joined(separator: "\n"))\nhost log:\n\(Support.hostLog(host))")
            let answered = host.log.components(separatedBy: "\" 200 0 \"").count - 1
            print("[hostile] HTTP flood: access log lines for answered HEADs: \(answered)")
            try await Task.sleep(for: .seconds(1))
            let after = Support.memory(of: pid)
            let growth = after.rss - before.rss
            print("[hostile] HTTP flood: \(Support.mib(total)) of requests sent on \(clients.count) unread connections; host RSS after \(Support.mib(after.rss)) (growth \(Support.mib(growth)), peak \(Support.mib(after.peak)))")
            #expect(host.isRunning, "RSS not measurable after the flood: the host is gone")
            #expect(growth < 60 << 20, "RSS grew by \(Support.mib(growth)) for \(Support.mib(total)) of unread pipelined requests")
            #expect(after.peak - before.rss < 60 << 20, "peak RSS \(Support.mib(after.peak)) vs \(Support.mib(before.rss)) before")
            clients.removeAll()
            try await Task.sleep(for: .milliseconds(500))
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the HTTP flood")
            print("[hostile] HTTP flood: host RSS once the connections closed \(Support.mib(Support.memory(of: pid).rss))")
        }
    }

    /// A complete head announcing a body that never comes: 408 (or the refusal the head already got) and
    /// close after the header timeout.
    @Test func httpBodyThatNeverArrivesGets408AndClose() async throws {
        let root = try Support.WebRoot()
        defer { root.remove() }
        try await Support.withServingHost(["--set", "http.header-timeout=2"], webRoot: root) { host, pid, http, smtp in
            for method in ["POST", "GET"] {
                let client = try TestSocket(port: http)
                try client.send("\(method) /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
                let started = ContinuousClock.now
                let (text, end) = client.readText(timeout: .seconds(8))
                let elapsed = ContinuousClock.now - started
                // A POST is refused at its head (405, keep-alive); its body still never comes, so the
                // connection closes after the same timeout, with no second answer.
                let expected = method == "POST" ? "HTTP/1.1 405 Method Not Allowed" : "HTTP/1.1 408 Request Timeout"
                #expect(statusLine(text) == expected, "\(method): answered \(text.prefix(120).debugDescription) (\(end))")
                #expect(text.components(separatedBy: "HTTP/1.1 ").count == 2, "\(method): one answer only: \(text.debugDescription)")
                #expect(end.isClosed, "\(method): the connection was not closed (\(end) after \(elapsed))")
                #expect(elapsed < .seconds(5), "\(method): closed after \(elapsed), header timeout 2 s")
                #expect(elapsed >= .milliseconds(1500), "\(method): closed after only \(elapsed)")
            }
            // The head itself never completing, with the default keep-alive timeout (60 s): the same 408.
            let slow = try TestSocket(port: http)
            try slow.send("GET /hello.txt HTTP/1.1\r\nHost: x\r\n")
            let started = ContinuousClock.now
            let (text, end) = slow.readText(timeout: .seconds(8))
            let elapsed = ContinuousClock.now - started
            #expect(statusLine(text) == "HTTP/1.1 408 Request Timeout" && end.isClosed && elapsed < .seconds(5),
                    "an unfinished head: \(text.prefix(80).debugDescription), \(end) after \(elapsed) (header timeout 2 s)")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the bodies that never arrived")
        }
    }

    /// After a request that asks for an upgrade, NIO's parser reads no more requests, and kept everything
    /// that followed for an upgrader this server does not have: one connection made the host hold 512 MiB
    /// in a second, and would have gone on. Now the answer closes the connection, and until then what
    /// arrives is bounded (a few hundred KiB, past which the connection closes).
    @Test func httpBytesAfterAnUpgradeRequestAreBounded() async throws {
        let root = try Support.WebRoot()
        defer { root.remove() }
        try await Support.withServingHost([], webRoot: root) { host, pid, http, smtp in
            let before = Support.memory(of: pid)
            let client = try TestSocket(port: http, receiveBuffer: 4096)
            try client.send("GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            let flood = client.flood(Array("not HTTP any more ".utf8), total: 256 << 20, hostPID: pid, baselineRSS: before.rss)
            print("[hostile] HTTP bytes after an upgrade request: \(flood)")
            #expect(flood.stopped.hasPrefix("the server closing"), "\(flood)")
            #expect(flood.sent < 32 << 20, "the server took \(Support.mib(flood.sent)) after the upgrade request")
            #expect(flood.peakRSS - before.rss < 60 << 20, "peak RSS growth \(Support.mib(flood.peakRSS - before.rss))")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the bytes after an upgrade request")
        }
    }

    /// A client that asks for 50 MiB and never reads: the send timeout closes the connection.
    @Test func httpClientThatNeverReadsALargeResponseIsCutOff() async throws {
        let root = try Support.WebRoot(big: true)
        defer { root.remove() }
        try await Support.withServingHost(["--set", "http.send-timeout=2"], webRoot: root) { host, pid, http, smtp in
            let client = try TestSocket(port: http, receiveBuffer: 4096)
            try client.send("GET /big50.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            try await Task.sleep(for: .seconds(5))
            let result = client.read(keep: 512, timeout: .seconds(10))
            print("[hostile] HTTP send timeout: read \(Support.mib(result.count)) of a \(Support.mib(Support.WebRoot.bigSize)) response, then \(result.end)")
            #expect(String(decoding: result.data.prefix(15), as: UTF8.self) == "HTTP/1.1 200 OK")
            #expect(result.end.isClosed, "the server did not close the connection (\(result.end) after \(Support.mib(result.count)))")
            #expect(result.count < Support.WebRoot.bigSize, "the whole file arrived: the connection was not cut off")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the client that never read")
        }
    }

    @Test func httpConnectionsPerClientAreLimited() async throws {
        let root = try Support.WebRoot()
        defer { root.remove() }
        try await Support.withServingHost(["--set", "http.max-connections-per-client=3"], webRoot: root) { host, pid, http, smtp in
            var held: [TestSocket] = []
            for index in 0..<3 {
                let client = try TestSocket(port: http, source: "127.0.0.2")
                try client.send("GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
                let (text, end) = client.readText(until: "hello, web\n", timeout: .seconds(5))
                #expect(statusLine(text) == "HTTP/1.1 200 OK", "connection \(index + 1) from 127.0.0.2: \(text.prefix(80).debugDescription) \(end)")
                held.append(client)
            }
            let fourth = try TestSocket(port: http, source: "127.0.0.2")
            try? fourth.send("GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            let (refused, end) = fourth.readText(until: "\r\n\r\n", timeout: .seconds(5))
            #expect(refused.hasPrefix("HTTP/1.1 503"), "a 4th connection from 127.0.0.2: \(refused.prefix(120).debugDescription) (\(end))")
            let (other, _) = try TestSocket.exchange(port: http, "GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", source: "127.0.0.3")
            #expect(statusLine(other) == "HTTP/1.1 200 OK", "127.0.0.3 meanwhile: \(other.prefix(80).debugDescription)")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the per-client limit")
            // Once one of the three closes, 127.0.0.2 is served again.
            held.removeFirst()
            let again = try await Deadline.eventually("a slot for 127.0.0.2 again", timeout: .seconds(5)) { () -> String? in
                let (text, _) = try TestSocket.exchange(port: http, "GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", source: "127.0.0.2")
                return statusLine(text) == "HTTP/1.1 200 OK" ? text : nil
            }
            #expect(again.hasSuffix("hello, web\n"))
            held.removeAll()
        }
    }

    @Test func httpFifoInTheWebRootIs404AndBlocksNothing() async throws {
        let root = try Support.WebRoot()
        defer { root.remove() }
        try await Support.withServingHost(webRoot: root) { host, pid, http, smtp in
            // More requests than the service has event loops: a blocking open would stall every one.
            for attempt in 0..<(ProcessInfo.processInfo.activeProcessorCount + 2) {
                let started = ContinuousClock.now
                let (text, end) = try TestSocket.exchange(port: http, "GET /fifo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout: .seconds(3))
                #expect(statusLine(text) == "HTTP/1.1 404 Not Found", "attempt \(attempt + 1): \(text.prefix(80).debugDescription) (\(end))")
                #expect(ContinuousClock.now - started < .seconds(2))
            }
            let (head, _) = try TestSocket.exchange(port: http, "HEAD /fifo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout: .seconds(3))
            #expect(statusLine(head) == "HTTP/1.1 404 Not Found")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the FIFO")
        }
    }

    @Test func httpRedirectsNeverPointToAnotherHost() async throws {
        let root = try Support.WebRoot()
        defer { root.remove() }
        try await Support.withServingHost(webRoot: root) { host, pid, http, smtp in
            let targets = ["//docs", "//evil.example", "///evil.example", "//evil.example/", "//evil.example?x=1", "/docs", "/./evil.example"]
            for target in targets {
                let (text, end) = try TestSocket.exchange(port: http, "GET \(target) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                let status = statusLine(text)
                #expect(!status.isEmpty, "\(target): no answer (\(end))")
                if let location = header("Location", in: text) {
                    #expect(!location.hasPrefix("//"), "\(target) → \(status), Location: \(location)")
                    #expect(!location.hasPrefix("/\\") && !location.contains("://"), "\(target) → Location: \(location)")
                }
            }
            // The plain redirect still works.
            let (plain, _) = try TestSocket.exchange(port: http, "GET /docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(statusLine(plain) == "HTTP/1.1 301 Moved Permanently")
            #expect(header("Location", in: plain) == "/docs/")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the redirects")
        }
    }

    // MARK: - SMTP

    @Test func smtpBareLineFeedIsRefusedAndSmugglesNothing() async throws {
        try await Support.withServingHost { host, pid, http, smtp in
            // In a command line.
            do {
                let client = try SMTPTestClient(port: smtp, timeoutSeconds: 5)
                try client.hello()
                try client.send("MAIL FROM:<a@localhost>\n")
                let reply = try client.reply()
                #expect(reply?.hasPrefix("521 5.5.2") == true, "MAIL with a bare LF: \(reply ?? "EOF")")
                let after = client.next()
                #expect(after == "EOF", "after 521 the connection must close, got \(after)")
            }
            // In DATA content: "\n.\n" and "\r\n.\n" would end the message for some other server, and what
            // follows would run as commands.
            for (name, ending) in [("LF.LF", "hello\n.\n"), ("CRLF.LF", "hello\r\n.\n")] {
                let client = try SMTPTestClient(port: smtp, timeoutSeconds: 5)
                try client.hello()
                #expect(try client.exchange("MAIL FROM:<a@localhost>\r\nRCPT TO:<smuggle@localhost>\r\nDATA\r\n", replies: 3) == ["250", "250", "354"])
                try client.send("Subject: smuggling\r\n\r\n" + ending
                                + "MAIL FROM:<x@localhost>\r\nRCPT TO:<victim@localhost>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
                let reply = try client.reply()
                #expect(reply?.hasPrefix("521 5.5.2") == true, "\(name): \(reply ?? "EOF")")
                let rest = client.next()
                #expect(rest == "EOF", "\(name): after 521 the connection must close, got \(rest)")
            }
            try await Task.sleep(for: .milliseconds(300))
            #expect(Support.newFiles(host).isEmpty, "delivered: \(Support.newFiles(host))")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the bare LF probes")

            // A proper message is accepted and stored intact.
            let proper = try SMTPTestClient(port: smtp, timeoutSeconds: 5)
            try proper.hello()
            #expect(try proper.exchange("MAIL FROM:<a@localhost>\r\nRCPT TO:<proper@localhost>\r\nDATA\r\n", replies: 3) == ["250", "250", "354"])
            try proper.send("Subject: proper\r\n\r\nline one\r\nline two\r\n.\r\n")
            #expect(try proper.reply()?.hasPrefix("250 ") == true)
            let delivered = host.deliveredMessages(to: "proper@localhost")
            #expect(delivered.count == 1)
            #expect(delivered.first?.body == Data("Subject: proper\r\n\r\nline one\r\nline two\r\n".utf8))

            // BDAT content is counted octets: a bare LF in it is content, stored byte for byte.
            let chunk = Array("Subject: binary\n\nline\n.\nMAIL FROM:<x@localhost>\n\r\n.\r\n\u{0}\u{7f}end\n".utf8)
            try proper.send("MAIL FROM:<a@localhost> BODY=BINARYMIME\r\nRCPT TO:<chunky@localhost>\r\n")
            #expect(try (0..<2).map { _ in try proper.code() ?? "EOF" } == ["250", "250"])
            try proper.send(Array("BDAT \(chunk.count) LAST\r\n".utf8) + chunk)
            #expect(try proper.reply()?.hasPrefix("250 ") == true)
            let chunked = host.deliveredMessages(to: "chunky@localhost")
            #expect(chunked.count == 1)
            #expect(chunked.first.map { [UInt8]($0.body) } == chunk, "BDAT content not stored byte-exact")
            #expect(host.deliveredMessages(to: "victim@localhost").isEmpty)
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the proper messages")
        }
    }

    @Test func smtpControlOctetsNeverReachAStoredHeader() async throws {
        try await Support.withServingHost { host, pid, http, smtp in
            // Each probe runs a whole transaction, so that whatever was accepted would be stored.
            let client = try SMTPTestClient(port: smtp, timeoutSeconds: 5)
            #expect(try client.code() == "220")
            for (name, expected) in [("a\rb", "501 5.5.2"), ("a\u{7f}b", "501 5.5.2"), ("a\u{1b}[2Jb", "501 5.5.2"), ("a\tb", "501 5.5.2")] {
                try client.send("EHLO \(name)\r\n")
                let reply = try #require(try client.reply())
                #expect(reply.hasPrefix(expected), "EHLO \(name.debugDescription): \(reply)")
            }
            try client.send("HELO a\u{0}b\r\n")
            let helo = try #require(try client.reply())
            #expect(helo.hasPrefix("501"), "HELO with NUL: \(helo)")
            try client.send("EHLO good.test\r\n")
            #expect(try client.code() == "250")

            try client.send("MAIL FROM:<a\u{0}b@localhost>\r\n")
            let mail = try #require(try client.reply())
            #expect(mail.hasPrefix("501 5.1.7"), "MAIL FROM with NUL: \(mail)")
            if !mail.hasPrefix("250") {
                try client.send("MAIL FROM:<sender@localhost>\r\n")
                #expect(try client.code() == "250")
            }
            try client.send("RCPT TO:<a\u{1}b@localhost>\r\n")
            let rcpt = try #require(try client.reply())
            #expect(rcpt.hasPrefix("501"), "RCPT TO with \\x01: \(rcpt)")
            #expect(rcpt.hasPrefix("501 5.1.3"), "RCPT TO with \\x01: \(rcpt)")
            #expect(try client.exchange("RCPT TO:<inject@localhost>\r\nDATA\r\n", replies: 2) == ["250", "354"])
            try client.send("Subject: injection\r\n\r\nbody\r\n.\r\n")
            #expect(try client.reply()?.hasPrefix("250 ") == true)

            // A second session whose EHLO name with a CR would have been accepted earlier.
            let second = try SMTPTestClient(port: smtp, timeoutSeconds: 5)
            #expect(try second.code() == "220")
            try second.send("EHLO x\rReceived: forged\r\n")
            let forged = try #require(try second.reply())
            #expect(forged.hasPrefix("501"), "EHLO with CR: \(forged)")
            if !forged.hasPrefix("250") {
                try second.send("EHLO y.test\r\n")
                #expect(try second.code() == "250")
            }
            try second.send("MAIL FROM:<s\r@localhost>\r\n")
            let mailCR = try #require(try second.reply())
            #expect(mailCR.hasPrefix("501 5.1.7"), "MAIL FROM with CR: \(mailCR)")
            if !mailCR.hasPrefix("250") {
                try second.send("MAIL FROM:<sender@localhost>\r\n")
                #expect(try second.code() == "250")
            }
            #expect(try second.exchange("RCPT TO:<inject@localhost>\r\nDATA\r\n", replies: 2) == ["250", "354"])
            try second.send("Subject: injection 2\r\n\r\nbody\r\n.\r\n")
            #expect(try second.reply()?.hasPrefix("250 ") == true)

            // Whatever reached the disk: the headers the host wrote have no control octet but CR LF and TAB
            // (folding), and CR only before LF.
            let messages = host.mailboxes().flatMap { host.deliveredMessages(to: $0) }
            #expect(messages.count == 2, "stored: \(messages.map(\.path))")
            for message in messages {
                let header = [UInt8](message.content.prefix(message.content.count - message.body.count))
                let bad = header.enumerated().filter { index, byte in
                    (byte < 0x20 && byte != 0x0D && byte != 0x0A && byte != 0x09) || byte == 0x7F
                        || (byte == 0x0D && (index + 1 >= header.count || header[index + 1] != 0x0A))
                }
                #expect(bad.isEmpty, "control octets \(bad.map { String(format: "0x%02x", $0.element) }) in the stored header:\n\(String(decoding: header, as: UTF8.self).debugDescription)")
                #expect(!String(decoding: header, as: UTF8.self).contains("forged"))
            }
            #expect(!host.mailboxes().contains { $0.utf8.contains { $0 < 0x20 || $0 == 0x7F } }, "mailboxes: \(host.mailboxes())")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the header injections")
        }
    }

    @Test func smtpPipelinedFloodWithoutReadingKeepsMemoryBoundedAndTimesOut() async throws {
        try await Support.withServingHost(["--set", "smtp.send-timeout=2"]) { host, pid, http, smtp in
            let before = Support.memory(of: pid)
            print("[hostile] SMTP flood: host RSS before \(Support.mib(before.rss)) (peak so far \(Support.mib(before.peak)))")
            let client = try TestSocket(port: smtp, receiveBuffer: 4096)
            let flood = client.flood(Array("HELP\r\nEHLO x\r\n".utf8), total: 20 << 20, hostPID: pid, baselineRSS: before.rss)
            let after = Support.memory(of: pid)
            let growth = after.rss - before.rss
            print("[hostile] SMTP flood: \(flood); host RSS after \(Support.mib(after.rss)) (growth \(Support.mib(growth)), peak \(Support.mib(after.peak)))")
            #expect(growth < 60 << 20, "RSS grew by \(Support.mib(growth)) for \(Support.mib(flood.sent)) of unread pipelined commands")
            #expect(flood.peakRSS - before.rss < 60 << 20, "peak RSS during the flood \(Support.mib(flood.peakRSS))")
            // The send timeout (2 s, checked every second) closes the session: reading finds the end of it.
            try await Task.sleep(for: .seconds(4))
            let started = ContinuousClock.now
            let rest = client.read(keep: 0, timeout: .seconds(10))
            print("[hostile] SMTP flood: read \(Support.mib(rest.count)) of replies, then \(rest.end) after \(ContinuousClock.now - started)")
            #expect(rest.end.isClosed, "the unread session was not closed (\(rest.end) after reading \(Support.mib(rest.count)))")
            let failures = ((try? host.events()) ?? []).filter { $0.to == .failed || $0.to == .backoff }
            #expect(failures.isEmpty && host.isRunning,
                    "the session was ended by a service failure, not the send timeout:\n\(failures.map(StatusPresenter.line).joined(separator: "\n"))\nhost log:\n\(Support.hostLog(host, last: 8))")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the SMTP flood")

            print("[hostile] SMTP flood: host RSS once the connection closed \(Support.mib(Support.memory(of: pid).rss))")
        }
    }

    /// The send timeout alone, with the liveness timeout raised so that a slow event loop (a debug build
    /// on a busy machine answers several hundred KiB of pipelined commands in about a second) cannot be
    /// what ends the session: 1.5 MiB of HELP (18 MiB of replies, far more than the socket buffers hold),
    /// never read.
    @Test func smtpSendTimeoutClosesASessionThatNeverReads() async throws {
        try await Support.withServingHost(["--set", "smtp.send-timeout=2", "--set", "supervisor.liveness-timeout=15000"]) { host, pid, http, smtp in
            let before = Support.memory(of: pid)
            let small = try TestSocket(port: smtp, receiveBuffer: 4096)
            let gentle = small.flood(Array("HELP\r\n".utf8), total: 1536 << 10, stall: .seconds(2), deadline: .seconds(10),
                                     hostPID: pid, baselineRSS: before.rss)
            print("[hostile] SMTP send timeout: \(gentle)")
            try await Task.sleep(for: .seconds(5))
            let closing = small.read(keep: 0, timeout: .seconds(10))
            print("[hostile] SMTP send timeout: read \(Support.mib(closing.count)) of replies, then \(closing.end); host RSS \(Support.mib(before.rss)) before, \(Support.mib(Support.memory(of: pid).rss)) after")
            #expect(closing.end.isClosed, "a session that never reads its replies was not closed (\(closing.end) after \(Support.mib(closing.count)))")
            let failures = ((try? host.events()) ?? []).filter { $0.to == .failed || $0.to == .backoff }
            #expect(failures.isEmpty, "service failures:\n\(failures.map(StatusPresenter.line).joined(separator: "\n"))")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the SMTP send timeout")
        }
    }

    @Test func smtpSessionsPerClientAreLimited() async throws {
        try await Support.withServingHost(["--set", "smtp.max-sessions-per-client=3"]) { host, pid, http, smtp in
            var held: [TestSocket] = []
            for index in 0..<3 {
                let client = try TestSocket(port: smtp, source: "127.0.0.2")
                let (text, _) = client.readText(until: "\r\n", timeout: .seconds(5))
                #expect(text.hasPrefix("220 "), "session \(index + 1) from 127.0.0.2: \(text.debugDescription)")
                held.append(client)
            }
            let fourth = try TestSocket(port: smtp, source: "127.0.0.2")
            let (refused, end) = fourth.readText(until: "\r\n", timeout: .seconds(5))
            #expect(refused.hasPrefix("421 4.7.0"), "a 4th session from 127.0.0.2: \(refused.debugDescription) (\(end))")
            let other = try TestSocket(port: smtp, source: "127.0.0.3")
            let (greeting, _) = other.readText(until: "\r\n", timeout: .seconds(5))
            #expect(greeting.hasPrefix("220 "), "127.0.0.3 meanwhile: \(greeting.debugDescription)")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the per-client session limit")
            held.removeAll()
        }
    }

    @Test func smtpMailboxesAppearOnlyWhenAMessageCommits() async throws {
        try await Support.withServingHost { host, pid, http, smtp in
            let before = Support.mailboxDirectories(host)
            let client = try SMTPTestClient(port: smtp, timeoutSeconds: 5)
            try client.hello()
            try client.send("MAIL FROM:<a@localhost>\r\n")
            #expect(try client.code() == "250")
            let names = (0..<50).map { _ in "r" + UUID().uuidString.prefix(12).lowercased() }
            try client.send(names.map { "RCPT TO:<\($0)@localhost>\r\n" }.joined())
            let codes = try names.map { _ in try client.code() ?? "EOF" }
            #expect(codes.allSatisfy { $0 == "250" }, "\(Set(codes))")
            #expect(try client.exchange("RSET\r\n") == ["250"])

            // Another session starts DATA, sends some content and goes away.
            do {
                let dropped = try SMTPTestClient(port: smtp, timeoutSeconds: 5)
                try dropped.hello()
                #expect(try dropped.exchange("MAIL FROM:<a@localhost>\r\nRCPT TO:<dropped-\(UUID().uuidString.prefix(6).lowercased())@localhost>\r\nDATA\r\n", replies: 3) == ["250", "250", "354"])
                try dropped.send("Subject: never finished\r\n\r\n" + String(repeating: "partial line\r\n", count: 2000))
            }
            try await Task.sleep(for: .milliseconds(500))
            let created = Support.mailboxDirectories(host).subtracting(before)
            #expect(created.isEmpty, "\(created.count) mailboxes created without a message: \(created.sorted().prefix(5))")

            // A committed message creates its Maildir, with tmp, new and cur.
            let name = "fresh" + UUID().uuidString.prefix(6).lowercased()
            #expect(try client.exchange("MAIL FROM:<a@localhost>\r\nRCPT TO:<\(name)@localhost>\r\nDATA\r\n", replies: 3) == ["250", "250", "354"])
            try client.send("Subject: first\r\n\r\nfirst\r\n.\r\n")
            #expect(try client.reply()?.hasPrefix("250 ") == true)
            let maildir = host.maildir(for: "\(name)@localhost")
            // Delivered just behind the 250 (smtp.commit = journal).
            _ = try await Deadline.eventually("the delivery behind the 250", timeout: .seconds(5)) { () -> Bool? in
                ((try? FileManager.default.contentsOfDirectory(atPath: maildir.appendingPathComponent("new").path)) ?? []).isEmpty ? nil : true
            }
            for folder in ["tmp", "new", "cur"] {
                var isDirectory: ObjCBool = false
                #expect(FileManager.default.fileExists(atPath: maildir.appendingPathComponent(folder).path, isDirectory: &isDirectory) && isDirectory.boolValue,
                        "\(folder)/ missing in \(maildir.path)")
            }
            #expect(host.deliveredMessages(to: "\(name)@localhost").count == 1)
            #expect(Support.mailboxDirectories(host).subtracting(before) == ["\(name)@localhost"])
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "the mailbox probes")
        }
    }

    @Test func smtpRecipientsExistingRefusesUnknownLocalParts() async throws {
        try await Support.withServingHost(["--set", "smtp.recipients=existing"]) { host, pid, http, smtp in
            // A mailbox that exists (made as an operator would).
            let known = host.maildir(for: "known@localhost")
            for folder in ["tmp", "new", "cur"] {
                try FileManager.default.createDirectory(at: known.appendingPathComponent(folder), withIntermediateDirectories: true)
            }
            let client = try SMTPTestClient(port: smtp, timeoutSeconds: 5)
            try client.hello()
            #expect(try client.exchange("MAIL FROM:<a@remote.test>\r\n") == ["250"])
            try client.send("RCPT TO:<nobody-\(UUID().uuidString.prefix(6).lowercased())@localhost>\r\n")
            let unknown = try #require(try client.reply())
            #expect(unknown.hasPrefix("550 5.1.1"), "unknown local part: \(unknown)")
            try client.send("RCPT TO:<postmaster@localhost>\r\n")
            let postmaster = try #require(try client.reply())
            #expect(postmaster.hasPrefix("250"), "postmaster@localhost: \(postmaster)")
            try client.send("RCPT TO:<Postmaster>\r\n")
            let bare = try #require(try client.reply())
            #expect(bare.hasPrefix("250"), "<Postmaster>: \(bare)")
            try client.send("RCPT TO:<known@localhost>\r\n")
            let existing = try #require(try client.reply())
            #expect(existing.hasPrefix("250"), "known@localhost (its Maildir exists): \(existing)")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "recipients = existing")
        }
    }

    @Test func smtpPostmasterWithoutDomainAndSourceRoutesAreDelivered() async throws {
        try await Support.withServingHost { host, pid, http, smtp in
            let client = try SMTPTestClient(port: smtp, timeoutSeconds: 5)
            try client.hello()
            #expect(try client.exchange("MAIL FROM:<a@remote.test>\r\n") == ["250"])
            try client.send("RCPT TO:<Postmaster>\r\n")
            let postmaster = try #require(try client.reply())
            #expect(postmaster.hasPrefix("250"), "<Postmaster>: \(postmaster)")
            if postmaster.hasPrefix("250") {
                #expect(try client.exchange("DATA\r\n") == ["354"])
                try client.send("Subject: to the postmaster\r\n\r\nhello\r\n.\r\n")
                #expect(try client.reply()?.hasPrefix("250 ") == true)
                let mailRoot = host.stateDirectory.appendingPathComponent("mail").path
                let postmasterMail = {
                    ((try? FileManager.default.contentsOfDirectory(atPath: mailRoot)) ?? []).flatMap { domain in
                        ((try? FileManager.default.contentsOfDirectory(atPath: "\(mailRoot)/\(domain)/postmaster/new")) ?? []).map { "\(domain)/\($0)" }
                    }
                }
                // Delivered just behind the 250 (smtp.commit = journal).
                let found = (try? await Deadline.eventually("the delivery behind the 250", timeout: .seconds(5)) { () -> [String]? in
                    let found = postmasterMail()
                    return found.isEmpty ? nil : found
                }) ?? []
                #expect(found.count == 1, "mail/*/postmaster/new holds \(found); mailboxes: \(host.mailboxes())")
            } else {
                _ = try client.exchange("RSET\r\n")
            }

            for route in ["@relay.example:user@localhost", "@one.example,@two.example:user@localhost"] {
                try client.send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<\(route)>\r\n")
                #expect(try client.code() == "250")
                let reply = try #require(try client.reply())
                #expect(reply.hasPrefix("250"), "RCPT TO:<\(route)>: \(reply)")
                if reply.hasPrefix("250") {
                    #expect(try client.exchange("DATA\r\n") == ["354"])
                    try client.send("Subject: routed\r\n\r\nvia \(route)\r\n.\r\n")
                    #expect(try client.reply()?.hasPrefix("250 ") == true)
                } else {
                    _ = try client.exchange("RSET\r\n")
                }
            }
            let routed = host.deliveredMessages(to: "user@localhost")
            #expect(routed.count == 2, "user@localhost received \(routed.count); mailboxes: \(host.mailboxes())")
            #expect(!host.mailboxes().contains { $0.contains("relay.example") || $0.hasPrefix("@") }, "\(host.mailboxes())")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "postmaster and source routes")
        }
    }

    // MARK: - Configuration

    static let badSettings = [
        "supervisor.restart-window=inf", "supervisor.restart-window=nan", "supervisor.restart-window=0",
        "supervisor.restart-window=-1", "supervisor.restart-window=1e400", "supervisor.max-restarts=-1",
        "smtp.max-sessions=0", "smtp.max-sessions=99999999999999999999", "http.header-timeout=0",
        "http.max-request-line=9223372036854775807", "smtp.send-timeout=-5", "http.max-connections-per-client=abc",
        "smtp.recipients=some", "http.access-log=/nonexistent-folder/access.log",
    ]

    @Test(arguments: badSettings)
    func aBadValueStopsTheHostWith78NamingTheKey(_ assignment: String) async throws {
        let key = String(assignment.split(separator: "=")[0])
        let run = try await BoundedRun.run(["--set", assignment])
        #expect(run.exitStatus == 78, "--set \(assignment): \(run.exitStatus.map { "exit status \($0)" } ?? "still running after 8 s (killed)"); stderr: \(run.stderr.suffix(600))")
        #expect(run.stderr.contains(key), "--set \(assignment): stderr does not name \(key): \(run.stderr.suffix(600).debugDescription)")
    }

    @Test func aReloadWithABadValueIsRefusedAndTheHostKeepsServing() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-hostile-config-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("inetinfo.toml")
        try Data("[supervisor]\nrestart-window = 30\nmax-restarts = 5\n".utf8).write(to: file)
        try await Support.withServingHost(["--config", file.path]) { host, pid, http, smtp in
            for bad in ["restart-window = inf", "restart-window = nan", "restart-window = 0", "restart-window = -1", "max-restarts = -1"] {
                try Data("[supervisor]\n\(bad)\n".utf8).write(to: file)
                let result = try host.ctl(["reload"])
                let output = result.stdout + result.stderr
                #expect(result.status != 0, "reload with \(bad): exit \(result.status), \(output)")
                let key = "supervisor." + bad.split(separator: " ")[0]
                #expect(output.contains(key) || output.contains(String(bad.split(separator: " ")[0])), "reload with \(bad): output does not name the key: \(output.debugDescription)")
                await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "a reload with \(bad)")
                guard host.isRunning else { return }
            }
            // A good file still reloads.
            try Data("[supervisor]\nrestart-window = 20\n".utf8).write(to: file)
            let good = try host.ctl(["reload"])
            #expect(good.status == 0, "a good reload: \(good.stdout) \(good.stderr)")
            await Support.expectServing(host, pid: pid, http: http, smtp: smtp, after: "a good reload")
        }
    }
}
