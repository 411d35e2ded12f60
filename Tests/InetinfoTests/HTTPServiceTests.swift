import Foundation
import InetinfoTestKit
import Testing

/// A web root for the tests: small and large files, a directory with and without index.html, and a
/// symlink that points outside the root.
struct WebRoot {
    let url: URL
    let big: Data

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-www-\(UUID().uuidString.prefix(8))")
        let manager = FileManager.default
        try manager.createDirectory(at: url.appendingPathComponent("docs"), withIntermediateDirectories: true)
        try manager.createDirectory(at: url.appendingPathComponent("empty"), withIntermediateDirectories: true)
        try Data("hello, web\n".utf8).write(to: url.appendingPathComponent("hello.txt"))
        try Data("<h1>docs</h1>\n".utf8).write(to: url.appendingPathComponent("docs/index.html"))
        try Data("body{}\n".utf8).write(to: url.appendingPathComponent("style.css"))
        try Data([0, 1, 2]).write(to: url.appendingPathComponent("blob.unknownext"))
        big = Data((0..<(3 * 1024 * 1024 + 7)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 8) })
        try big.write(to: url.appendingPathComponent("big.bin"))
        try manager.createSymbolicLink(atPath: url.appendingPathComponent("outside").path, withDestinationPath: "/etc/passwd")
        try manager.createSymbolicLink(atPath: url.appendingPathComponent("etc").path, withDestinationPath: "/etc")
    }

    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// curl as an independent client: returns (status code, headers lowercased, body).
func curl(_ arguments: [String]) throws -> (status: Int, headers: [String: String], body: Data) {
    let directory = FileManager.default.temporaryDirectory
    let headerFile = directory.appendingPathComponent("curl-h-\(UUID().uuidString)").path
    let bodyFile = directory.appendingPathComponent("curl-b-\(UUID().uuidString)").path
    defer {
        unlink(headerFile)
        unlink(bodyFile)
    }
    let result = try CommandResult.run("/usr/bin/curl", ["-s", "-D", headerFile, "-o", bodyFile, "--max-time", "10"] + arguments)
    guard result.status == 0 else { throw TestError("curl \(arguments) failed: \(result.status) \(result.stderr)") }
    let raw = try String(contentsOfFile: headerFile, encoding: .utf8)
    let blocks = raw.components(separatedBy: "\r\n\r\n").filter { !$0.isEmpty }
    let lines = (blocks.last ?? "").components(separatedBy: "\r\n")
    let fields = lines[0].split(separator: " ")
    guard fields.count >= 2, let status = Int(fields[1]) else { throw TestError("curl \(arguments): no status line in \(raw.debugDescription)") }
    var headers: [String: String] = [:]
    for line in lines.dropFirst() {
        guard let colon = line.firstIndex(of: ":") else { continue }
        headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return (status, headers, (try? Data(contentsOf: URL(fileURLWithPath: bodyFile))) ?? Data())
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct HTTPServiceTests {
    func withWebHost(_ extra: [String] = [], _ body: (TestHost, Int, WebRoot) async throws -> Void) async throws {
        let root = try WebRoot()
        defer { root.remove() }
        try await withHost(["--web-root", root.url.path, "--set", "smtp.enabled=false"] + extra) { host in
            let status = try await host.waitUntilRunning()
            try await body(host, try host.port(of: "http", in: status), root)
        }
    }

    @Test func filesAreServedWithTypeLengthAndValidators() async throws {
        try await withWebHost { _, port, root in
            let get = try curl(["http://127.0.0.1:\(port)/hello.txt"])
            #expect(get.status == 200)
            #expect(get.body == Data("hello, web\n".utf8))
            #expect(get.headers["content-type"] == "text/plain; charset=utf-8")
            #expect(get.headers["content-length"] == "11")
            #expect(get.headers["etag"]?.hasPrefix("\"") == true)
            #expect(get.headers["last-modified"]?.hasSuffix(" GMT") == true)
            #expect(get.headers["date"].flatMap { HTTPDateProbe.seconds($0) }.map { abs($0 - Int(time(nil))) <= 5 } == true)
            #expect(try curl(["http://127.0.0.1:\(port)/style.css"]).headers["content-type"] == "text/css; charset=utf-8")
            #expect(try curl(["http://127.0.0.1:\(port)/blob.unknownext"]).headers["content-type"] == "application/octet-stream")

            let head = try curl(["-I", "http://127.0.0.1:\(port)/hello.txt"])
            #expect(head.status == 200)
            #expect(head.headers["content-length"] == "11")
            #expect(head.headers["etag"] == get.headers["etag"])
            // curl -I writes the headers as its output; over a raw socket the response must end with them.
            let raw = try rawHTTP(port: port, "HEAD /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            #expect(raw.hasSuffix("\r\n\r\n"))
            #expect(raw.contains("Content-Length: 11\r\n"))

            let big = try curl(["http://127.0.0.1:\(port)/big.bin"])
            #expect(big.status == 200)
            #expect(big.body == root.big)
        }
    }

    /// A cached file's fields are encoded once and written as they are: each response still carries
    /// exactly its own head — the fields once each, what this request adds (`Connection: close`, a
    /// range's), the `Date`, the blank line — whether the file was resolved afresh or came from the cache.
    @Test func aCachedFileIsAnsweredWithExactlyItsOwnHeadEveryTime() async throws {
        try await withWebHost { _, port, _ in
            let response = try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                + "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                + "GET /hello.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-4\r\n\r\n"
                + "HEAD /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                + "GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            let heads = response.components(separatedBy: "HTTP/1.1 ").dropFirst().map { part in
                part.components(separatedBy: "\r\n\r\n")[0].components(separatedBy: "\r\n")
                    .map { $0.components(separatedBy: ":")[0] }
            }
            let whole = ["200 OK", "Server", "ETag", "Last-Modified", "Accept-Ranges", "Content-Type", "Content-Length"]
            try #require(heads.count == 5, "\(response)")
            #expect(heads[0] == whole + ["Date"])
            #expect(heads[1] == whole + ["Date"])
            #expect(heads[2] == ["206 Partial Content"] + whole.dropFirst() + ["Content-Range", "Date"])
            #expect(heads[3] == whole + ["Date"])
            #expect(heads[4] == whole + ["Connection", "Date"])
            #expect(response.contains("Content-Length: 5\r\nContent-Range: bytes 0-4/11\r\n"))
            #expect(response.components(separatedBy: "Content-Length: 11\r\n").count == 5)
            #expect(response.hasSuffix("\r\n\r\nhello, web\n"))
        }
    }

    @Test func otherMethodsGet405WithAllow() async throws {
        try await withWebHost { _, port, _ in
            for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
                let response = try curl(["-X", method, "http://127.0.0.1:\(port)/hello.txt"])
                #expect(response.status == 405, "\(method)")
                #expect(response.headers["allow"] == "GET, HEAD")
            }
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrderAndConnectionCloseIsHonoured() async throws {
        try await withWebHost { _, port, _ in
            // A request pipelined behind the one that says `Connection: close` is not answered (RFC 9112 §9.6).
            let response = try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /style.css HTTP/1.1\r\nHost: t\r\n\r\nGET /docs/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            let bodies = ["hello, web\n", "body{}\n", "<h1>docs</h1>\n"]
            var position = response.startIndex
            for body in bodies {
                let found = try #require(response.range(of: body, range: position..<response.endIndex), "\(body) in order")
                position = found.upperBound
            }
            #expect(response.components(separatedBy: "HTTP/1.1 200 OK").count == 4)
            #expect(response.contains("Connection: close"))
            // Also behind a file sent with sendfile, whose response ends later: no 400 for the request behind it
            // (llhttp refuses any byte after `Connection: close`; NIO holds that error until the response ends).
            let big = try rawHTTP(port: port, "GET /big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n",
                                  timeout: .seconds(10))
            #expect(statusLine(big) == "HTTP/1.1 200 OK")
            #expect(!big.contains("400 Bad Request") && !big.hasSuffix("hello, web\n"), "nothing after the file: \(big.suffix(200).debugDescription)")
            // HTTP/1.0 without keep-alive: answered in 1.0 and closed.
            let old = try rawHTTP(port: port, "GET /hello.txt HTTP/1.0\r\n\r\n")
            #expect(statusLine(old) == "HTTP/1.0 200 OK")
            #expect(old.hasSuffix("hello, web\n"))
        }
    }

    /// A client that pipelines many requests for a large file and reads nothing must not make the server
    /// queue a response — and hold a descriptor — per request: the next request waits until the current
    /// response's content has gone out.
    @Test func pipelinedRequestsWaitWhileTheClientDoesNotRead() async throws {
        try await withWebHost { host, port, root in
            let before = host.openFileDescriptors
            let client = try TestSocket(port: port)
            // 1500 × 3 MiB: far more than the socket buffers hold, so the server soon waits on the client.
            try client.send(String(repeating: "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n", count: 1500))
            // Wait until the server is answering (the connection and the file it sends are open), then
            // watch a whole second: on a slow machine a fixed sleep could sample before anything happened.
            _ = try await Deadline.eventually("the connection to be served", timeout: .seconds(10)) {
                host.openFileDescriptors > before ? true : nil
            }
            var held = 0
            let watchUntil = ContinuousClock.now + .seconds(1)
            while ContinuousClock.now < watchUntil {
                held = max(held, host.openFileDescriptors - before)
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(held < 20, "\(held) descriptors held for one connection's pipelined requests")
            // Once the client reads, the first response is whole (its head, then exactly its content)
            // and the second follows it.
            let separator = Array("\r\n\r\n".utf8)
            let head = client.read(until: separator, timeout: .seconds(10))
            var received = head.data
            let headEnd = received.firstRange(of: separator)?.upperBound
            if let headEnd, received.count < headEnd + root.big.count + 16 {
                received += client.read(limit: headEnd + root.big.count + 16 - received.count, keep: .max, timeout: .seconds(20)).data
            }
            let start = try #require(headEnd, "a response head")
            #expect(received.starts(with: Array("HTTP/1.1 200 OK\r\n".utf8)))
            let content = Array(received[start...])
            #expect(content.count >= root.big.count + 16, "the first response and the start of the second")
            #expect(Data(content.prefix(root.big.count)) == root.big, "the first response's content, whole")
            #expect(String(decoding: content.dropFirst(root.big.count).prefix(16), as: UTF8.self) == "HTTP/1.1 200 OK\r")
            client.close()
            _ = try await Deadline.eventually("descriptors released", timeout: .seconds(10)) {
                host.openFileDescriptors <= before + 2 ? true : nil
            }
            let again = try curl(["http://127.0.0.1:\(port)/big.bin"])
            #expect(again.status == 200 && again.body == root.big)
        }
    }

    /// A file sent with sendfile(2) goes out corked (TCP_CORK, as nginx's `tcp_nopush`), so that its head
    /// does not leave alone in a small segment; the cork must come off when the file has gone out, or the
    /// next small response on the connection waits for the kernel's 200 ms cork timer. The fastest of five
    /// such round trips is taken, so that a slow moment of the machine cannot fail it.
    @Test func afterAFileSentWithSendfileTheNextResponseIsNotHeldBack() async throws {
        try await withWebHost { _, port, root in
            let client = try TestSocket(port: port)
            defer { client.close() }
            let separator = Array("\r\n\r\n".utf8)
            var fastest = Duration.seconds(60)
            for _ in 0..<5 {
                try client.send("GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
                let head = client.read(until: separator, timeout: .seconds(10))
                let headEnd = try #require(head.data.firstRange(of: separator)?.upperBound, "a response head")
                #expect(head.data.starts(with: Array("HTTP/1.1 200 OK\r\n".utf8)))
                var content = Array(head.data[headEnd...])
                if content.count < root.big.count {
                    content += client.read(limit: root.big.count - content.count, keep: .max, timeout: .seconds(20)).data
                }
                #expect(Data(content) == root.big, "the file, whole and alone")
                let asked = ContinuousClock.now
                try client.send("GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
                let small = client.read(until: Array("hello, web\n".utf8), timeout: .seconds(5))
                #expect(small.end == .found)
                fastest = min(fastest, ContinuousClock.now - asked)
            }
            #expect(fastest < .milliseconds(100), "a small response after a sendfile took at least \(fastest)")
        }
    }

    @Test func conditionalAndRangeRequests() async throws {
        try await withWebHost { _, port, root in
            let url = "http://127.0.0.1:\(port)/big.bin"
            let first = try curl([url, "-r", "0-0"])
            let etag = try #require(first.headers["etag"])
            #expect(try curl(["-H", "If-None-Match: \(etag)", url]).status == 304)
            // A 304 carries the validators and Date once each, and no content (RFC 9110 §15.4.5).
            let notModified = try rawHTTP(port: port, "GET /big.bin HTTP/1.1\r\nHost: t\r\nIf-None-Match: \(etag)\r\nConnection: close\r\n\r\n")
            #expect(statusLine(notModified) == "HTTP/1.1 304 Not Modified")
            for field in ["ETag: ", "Last-Modified: ", "Date: ", "Server: "] {
                #expect(notModified.components(separatedBy: "\r\n" + field).count == 2, "\(field) once in \(notModified)")
            }
            #expect(notModified.hasSuffix("\r\n\r\n"))
            #expect(try curl(["-H", "If-None-Match: W/\(etag)", url]).status == 304)
            #expect(try curl(["-H", "If-None-Match: \"other\"", url]).status == 200)
            #expect(try curl(["-H", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT", url]).status == 304)
            #expect(try curl(["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT", "-r", "0-0", url]).status == 206)

            let part = try curl(["-r", "100-199", url])
            #expect(part.status == 206)
            #expect(part.headers["content-range"] == "bytes 100-199/\(root.big.count)")
            #expect(part.body == root.big[100..<200])
            let suffix = try curl(["-r", "-10", url])
            #expect(suffix.body == root.big.suffix(10))
            let unsatisfiable = try curl(["-r", "\(root.big.count)-", url])
            #expect(unsatisfiable.status == 416)
            #expect(unsatisfiable.headers["content-range"] == "bytes */\(root.big.count)")
            // Several ranges: the whole file (allowed by RFC 9110 §14.2).
            #expect(try curl(["-r", "0-1,5-6", url]).status == 200)
            // If-Range with a stale validator: the whole file.
            #expect(try curl(["-r", "0-1", "-H", "If-Range: \"stale\"", url]).status == 200)
        }
    }

    @Test func directoriesServeTheirIndexOrNothing() async throws {
        try await withWebHost { _, port, _ in
            #expect(try curl(["http://127.0.0.1:\(port)/docs/"]).body == Data("<h1>docs</h1>\n".utf8))
            let redirect = try curl(["http://127.0.0.1:\(port)/docs"])
            #expect(redirect.status == 301)
            #expect(redirect.headers["location"] == "/docs/")
            #expect(try curl(["http://127.0.0.1:\(port)/empty/"]).status == 404)
            #expect(try curl(["http://127.0.0.1:\(port)/missing.txt"]).status == 404)
            let root = try curl(["http://127.0.0.1:\(port)/"])
            #expect(root.status == 404, "no index.html at the root of this web root, and no listing")
        }
    }

    @Test func nothingOutsideTheWebRootIsEverServed() async throws {
        try await withWebHost { _, port, _ in
            let attempts = [
                "/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/%2E%2E/%2E%2E/etc/passwd",
                "/..%2f..%2f..%2fetc%2fpasswd", "/%2fetc%2fpasswd", "/docs/..%5c..%5cetc%5cpasswd",
                "/docs/..\\..\\..\\etc\\passwd", "/outside", "/etc/passwd", "/hello.txt%00.html", "/%252e%252e/etc/passwd",
                "/docs/../../etc/passwd", "/./../etc/passwd",
            ]
            for path in attempts {
                let response = try rawHTTP(port: port, "GET \(path) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                let status = statusLine(response)
                // docs/http.md: `..`, encoded slashes and backslashes, backslashes, NUL and links out of the
                // root are all 404.
                #expect(status == "HTTP/1.1 404 Not Found", "\(path): \(status)")
                #expect(!response.contains("root:"), "\(path) leaked /etc/passwd")
            }
            #expect(statusLine(try rawHTTP(port: port, "GET /%zz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")) == "HTTP/1.1 400 Bad Request")
            // A `..` segment is refused even where the path would stay inside the root (docs/http.md).
            #expect(statusLine(try rawHTTP(port: port, "GET /docs/../hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")) == "HTTP/1.1 404 Not Found")
        }
    }

    /// Served files are cached (resolution, and content when small) once they have settled; every change
    /// on disk — new content, a repointed symlink, a directory swapped for a link out of the root, a
    /// deletion — must show at the next request.
    @Test func cachedFilesFollowChangesOnDisk() async throws {
        try await withWebHost { _, port, root in
            let manager = FileManager.default
            let url = root.url
            try Data("one\n".utf8).write(to: url.appendingPathComponent("live.txt"))
            try Data("AAA\n".utf8).write(to: url.appendingPathComponent("a.txt"))
            try Data("BBB\n".utf8).write(to: url.appendingPathComponent("b.txt"))
            try manager.createSymbolicLink(atPath: url.appendingPathComponent("pick").path, withDestinationPath: "a.txt")
            try manager.createDirectory(at: url.appendingPathComponent("sub"), withIntermediateDirectories: true)
            try Data("page\n".utf8).write(to: url.appendingPathComponent("sub/passwd"))
            func get(_ path: String) throws -> String {
                let response = try rawHTTP(port: port, "GET \(path) HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                return statusLine(response) + " " + (response.components(separatedBy: "\r\n\r\n").last ?? "")
            }
            // Files changed in the last two seconds are not cached (file times are tick-granular).
            try await Task.sleep(for: .milliseconds(2600))
            for _ in 0..<3 {
                #expect(try get("/live.txt") == "HTTP/1.1 200 OK one\n")
                #expect(try get("/pick") == "HTTP/1.1 200 OK AAA\n")
                #expect(try get("/sub/passwd") == "HTTP/1.1 200 OK page\n")
            }
            let before = try curl(["http://127.0.0.1:\(port)/live.txt"]).headers["etag"]

            try Data("two\n".utf8).write(to: url.appendingPathComponent("live.txt"))
            #expect(try get("/live.txt") == "HTTP/1.1 200 OK two\n")
            #expect(try curl(["http://127.0.0.1:\(port)/live.txt"]).headers["etag"] != before)

            try manager.removeItem(at: url.appendingPathComponent("pick"))
            try manager.createSymbolicLink(atPath: url.appendingPathComponent("pick").path, withDestinationPath: "b.txt")
            #expect(try get("/pick") == "HTTP/1.1 200 OK BBB\n")

            try manager.moveItem(at: url.appendingPathComponent("sub"), to: url.appendingPathComponent("sub-old"))
            try manager.createSymbolicLink(atPath: url.appendingPathComponent("sub").path, withDestinationPath: "/etc")
            let escaped = try get("/sub/passwd")
            #expect(escaped.hasPrefix("HTTP/1.1 404 Not Found"), "\(escaped)")
            #expect(!escaped.contains("root:"))

            try manager.removeItem(at: url.appendingPathComponent("live.txt"))
            #expect(try get("/live.txt").hasPrefix("HTTP/1.1 404 Not Found"))
        }
    }

    @Test func limitsAnswerWithTheirStatus() async throws {
        try await withWebHost(["--set", "http.max-body-size=1000", "--set", "http.max-headers=20"]) { _, port, _ in
            let longLine = "GET /" + String(repeating: "a", count: 9000) + " HTTP/1.1\r\nHost: t\r\n\r\n"
            #expect(statusLine(try rawHTTP(port: port, longLine)) == "HTTP/1.1 414 URI Too Long")
            let hugeLine = "GET /" + String(repeating: "a", count: 100_000) + " HTTP/1.1\r\nHost: t\r\n\r\n"
            #expect(statusLine(try rawHTTP(port: port, hugeLine)) == "HTTP/1.1 414 URI Too Long")
            let bigHeader = "GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + String(repeating: "b", count: 40_000) + "\r\n\r\n"
            #expect(statusLine(try rawHTTP(port: port, bigHeader)) == "HTTP/1.1 431 Request Header Fields Too Large")
            let manyHeaders = "GET / HTTP/1.1\r\n" + (0..<30).map { "X-H\($0): v\r\n" }.joined() + "\r\n"
            #expect(statusLine(try rawHTTP(port: port, manyHeaders)) == "HTTP/1.1 431 Request Header Fields Too Large")
            #expect(statusLine(try rawHTTP(port: port, "GET / HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n")) == "HTTP/1.1 400 Bad Request")
            // RFC 9110 §9.1: a method the server does not know is 501 (methods are case-sensitive: `get` too);
            // §15.6.6: a version other than HTTP/1.x is 505.
            for unknown in ["BLAH\r\n\r\n", "FOO /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n", "get /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"] {
                #expect(statusLine(try rawHTTP(port: port, unknown)) == "HTTP/1.1 501 Not Implemented", "\(unknown.debugDescription)")
            }
            #expect(statusLine(try rawHTTP(port: port, "GET /hello.txt HTTP/2.0\r\nHost: t\r\n\r\n")) == "HTTP/1.1 505 HTTP Version Not Supported")
            #expect(statusLine(try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")) == "HTTP/1.1 413 Payload Too Large")
            // A small body on GET is read and discarded; the connection goes on.
            let withBody = try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcdeGET /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            #expect(withBody.components(separatedBy: "HTTP/1.1 200 OK").count == 3)
            #expect(withBody.hasSuffix("body{}\n"))
            // So is a small body after a refused method; an endless one is cut off past the limit, although
            // its 405 went out before a byte of it was read.
            let refusedSmall = try rawHTTP(port: port, "POST /hello.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcdeGET /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            #expect(statusLine(refusedSmall) == "HTTP/1.1 405 Method Not Allowed")
            #expect(refusedSmall.hasSuffix("body{}\n"))
            let endless = try TestSocket(port: port)
            try endless.send("POST /hello.txt HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            var sent = 0
            var closed = false
            while sent < 4 << 20 {
                do { try endless.send("400\r\n" + String(repeating: "x", count: 1024) + "\r\n", timeout: .seconds(2)) } catch { closed = true; break }
                sent += 1024
            }
            let (answer, end) = endless.readText(timeout: .seconds(5))
            #expect(statusLine(answer) == "HTTP/1.1 405 Method Not Allowed")
            #expect(closed || end == .eof || end == .reset, "a chunked body of \(sent) bytes after a 405: the connection is still open")
        }
    }

    /// RFC 9112 §3.2: exactly one valid `Host` in HTTP/1.1 (400 otherwise), none needed in HTTP/1.0; a
    /// target in absolute form is served by its path (§3.2.2); `/file/` is no file; a redirect to a
    /// directory keeps the query.
    @Test func theHostFieldAndTheTargetAreChecked() async throws {
        try await withWebHost { _, port, _ in
            for request in ["GET /hello.txt HTTP/1.1\r\n\r\n", "GET /hello.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                            "GET /hello.txt HTTP/1.1\r\nHost: a b\r\n\r\n", "GET /hello.txt HTTP/1.1\r\nHost: a/b\r\n\r\n",
                            "GET http:///hello.txt HTTP/1.1\r\nHost: a\r\n\r\n"] {
                #expect(statusLine(try rawHTTP(port: port, request)) == "HTTP/1.1 400 Bad Request", "\(request.debugDescription)")
            }
            for request in ["GET /hello.txt HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n", "GET /hello.txt HTTP/1.0\r\n\r\n",
                            "GET /hello.txt HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
                            "GET http://example.org/hello.txt HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n",
                            "GET HTTPS://example.org:443/hello.txt?x=1 HTTP/1.1\r\nHost: example.org\r\nConnection: close\r\n\r\n"] {
                let response = try rawHTTP(port: port, request)
                #expect(statusLine(response).hasSuffix(" 200 OK"), "\(request.debugDescription): \(statusLine(response))")
                #expect(response.hasSuffix("\r\n\r\nhello, web\n"), "\(request.debugDescription)")
            }
            #expect(statusLine(try rawHTTP(port: port, "GET http://example.org HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")) == "HTTP/1.1 404 Not Found",
                    "the root of this web root has no index")
            #expect(statusLine(try rawHTTP(port: port, "GET /hello.txt/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")) == "HTTP/1.1 404 Not Found")
            // A refusal that closes the connection is the last answer on it, whatever was pipelined behind.
            let refusedFirst = try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: a b\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\nGET /style.css HTTP/1.1\r\nHost: a\r\n\r\n")
            #expect(statusLine(refusedFirst) == "HTTP/1.1 400 Bad Request")
            #expect(refusedFirst.components(separatedBy: "HTTP/1.1 ").count == 2, "\(refusedFirst.debugDescription)")
            let redirect = try rawHTTP(port: port, "GET /docs?lang=fr HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            #expect(statusLine(redirect) == "HTTP/1.1 301 Moved Permanently")
            #expect(header("Location", in: redirect) == "/docs/?lang=fr")
        }
    }

    /// NIO's parser reads nothing after a request that asks for an upgrade (or a CONNECT): the server
    /// upgrades to nothing, answers in HTTP/1.1 and closes, instead of leaving the client waiting for
    /// answers to requests nobody reads (the bytes after such a request used to pile up without bound:
    /// see the hostile-client suite for the memory).
    @Test func requestsAfterWhichNothingIsParsedCloseTheConnection() async throws {
        try await withWebHost { _, port, _ in
            let upgrade = try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /style.css HTTP/1.1\r\nHost: a\r\n\r\n")
            #expect(statusLine(upgrade) == "HTTP/1.1 200 OK")
            #expect(header("Connection", in: upgrade) == "close")
            #expect(upgrade.hasSuffix("hello, web\n"), "answered, then closed: \(upgrade.debugDescription)")
            let connect = try rawHTTP(port: port, "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\nGET /hello.txt HTTP/1.1\r\nHost: a\r\n\r\n")
            #expect(statusLine(connect) == "HTTP/1.1 405 Method Not Allowed")
            #expect(header("Connection", in: connect) == "close")
            #expect(connect.components(separatedBy: "HTTP/1.1 ").count == 2, "\(connect.debugDescription)")
        }
    }

    /// RFC 9110 §13.2.2: `If-Match` (strong comparison) and `If-Unmodified-Since` answer 412 when the file is
    /// not the version the client has (a download resumer's guard against joining two versions), before
    /// `Range` is looked at; a date that is no calendar date (31 February) is ignored.
    @Test func preconditionsThatFailAnswer412() async throws {
        try await withWebHost { _, port, _ in
            let url = "http://127.0.0.1:\(port)/big.bin"
            let etag = try #require(try curl([url, "-r", "0-0"]).headers["etag"])
            #expect(try curl(["-H", "If-Match: \"other\"", url]).status == 412)
            #expect(try curl(["-H", "If-Match: \"other\"", "-r", "0-1", url]).status == 412)
            #expect(try curl(["-H", "If-Match: W/\(etag)", url]).status == 412, "weak tags never match strongly")
            #expect(try curl(["-H", "If-Match: \"other\", \(etag)", "-r", "0-1", url]).status == 206)
            #expect(try curl(["-H", "If-Match: *", url]).status == 200)
            #expect(try curl(["-H", "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT", url]).status == 412)
            #expect(try curl(["-H", "If-Unmodified-Since: Fri, 01 Jan 2100 00:00:00 GMT", url]).status == 200)
            // If-Match decides when present: If-Unmodified-Since is then not looked at.
            #expect(try curl(["-H", "If-Match: \(etag)", "-H", "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT", url]).status == 200)
            #expect(try curl(["-H", "If-Modified-Since: Sat, 31 Feb 2099 00:00:00 GMT", url]).status == 200, "no such date: ignored")
        }
    }

    /// RFC 9110 §10.1.1: a client that sends `Expect: 100-continue` waits before sending its content; the
    /// server answers at once (a static file needs no content) and closes, rather than waiting for content
    /// that waits for it. Any other expectation is 417; HTTP/1.0's is ignored.
    @Test func expectationsAreAnsweredWithoutWaitingForTheContent() async throws {
        try await withWebHost { _, port, _ in
            let started = ContinuousClock.now
            let waiting = try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
                                      timeout: .seconds(3))
            #expect(ContinuousClock.now - started < .seconds(2))
            #expect(statusLine(waiting) == "HTTP/1.1 200 OK")
            #expect(header("Connection", in: waiting) == "close")
            #expect(waiting.hasSuffix("hello, web\n"))
            #expect(statusLine(try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n")) == "HTTP/1.1 417 Expectation Failed")
            // Refused (405) at its head: closed too, rather than waiting for the content the client holds back.
            let refused = try rawHTTP(port: port, "PUT /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
                                      timeout: .seconds(3))
            #expect(statusLine(refused) == "HTTP/1.1 405 Method Not Allowed")
            #expect(header("Connection", in: refused) == "close")
            // RFC 9112 §6.1: HTTP/1.0 with Transfer-Encoding is closed after its answer, a refusal included.
            let framed = try rawHTTP(port: port, "POST /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                                     timeout: .seconds(3))
            #expect(statusLine(framed) == "HTTP/1.0 405 Method Not Allowed")
            let old = try rawHTTP(port: port, "GET /hello.txt HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc")
            #expect(statusLine(old) == "HTTP/1.0 200 OK")
            #expect(old.hasSuffix("hello, web\n"))
        }
    }

    /// HTTP/1.0 keeps a connection open only when the response says so (RFC 9112 §9.3).
    @Test func anHTTP10ClientAskingForKeepAliveIsToldAndKept() async throws {
        try await withWebHost { _, port, _ in
            let client = try TestSocket(port: port)
            try client.send("GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            let (first, _) = client.readText(until: "hello, web\n")
            #expect(statusLine(first) == "HTTP/1.0 200 OK")
            #expect(header("Connection", in: first) == "keep-alive")
            try client.send("HEAD /missing HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            let (second, _) = client.readText(until: "\r\n\r\n")
            #expect(statusLine(second) == "HTTP/1.0 404 Not Found")
            #expect(header("Connection", in: second) == "keep-alive")
        }
    }

    @Test func slowAndIdleClientsAreCutOffAndConnectionsAreLimited() async throws {
        try await withWebHost(["--set", "http.header-timeout=1", "--set", "http.keepalive-timeout=2", "--set", "http.max-connections=2"]) { _, port, _ in
            // A head that never ends: 408 after the head timeout, then closed.
            let slow = try TestSocket(port: port)
            try slow.send("GET /hello.txt HTTP/1.1\r\nHost: t\r\n")
            let started = ContinuousClock.now
            let answer = try slow.readUntilClosed()
            #expect(statusLine(answer) == "HTTP/1.1 408 Request Timeout")
            #expect(ContinuousClock.now - started < .seconds(5))
            // An idle keep-alive connection is closed quietly.
            let idle = try TestSocket(port: port)
            try idle.send("GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            let idleAnswer = try idle.readUntilClosed()
            #expect(statusLine(idleAnswer) == "HTTP/1.1 200 OK")
            #expect(idleAnswer.hasSuffix("hello, web\n"), "closed after the response, nothing else sent")
            // Two connections held open: the third is refused with 503.
            let held = [try TestSocket(port: port), try TestSocket(port: port)]
            let third = try await Deadline.eventually("a third connection to be refused", timeout: .seconds(5)) { () -> String? in
                let response = try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                return statusLine(response) == "HTTP/1.1 503 Service Unavailable" ? response : nil
            }
            #expect(third.contains("Retry-After"))
            withExtendedLifetime(held) {}  // the two stay open until here
        }
    }

    @Test func accessLogUsesTheCombinedFormat() async throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("access-\(UUID().uuidString.prefix(8)).log")
        defer { try? FileManager.default.removeItem(at: log) }
        try await withWebHost(["--set", "http.access-log=\(log.path)"]) { host, port, _ in
            _ = try curl(["-A", "test-agent/1", "-e", "http://ref.test/", "http://127.0.0.1:\(port)/hello.txt"])
            _ = try curl(["http://127.0.0.1:\(port)/missing"])
            // What a client sends cannot forge a line: quotes, backslashes and bytes outside printable
            // ASCII in a quoted field are escaped as nginx does.
            _ = try rawHTTP(port: port, "GET /hello.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: a\" 200 1 \"\\\t\u{E9}\r\nConnection: close\r\n\r\n")
            // Pipelined requests, one refused by the guard: a line each, in order, with its own status and size.
            _ = try rawHTTP(port: port, "GET /hello.txt?p=1 HTTP/1.1\r\nHost: t\r\n\r\nDELETE /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                + "HEAD /missing HTTP/1.1\r\nHost: t\r\nUser-Agent: third\r\nConnection: close\r\n\r\n")
            // The log is written in blocks by a thread of its own, at least every 100 ms: the lines are
            // there while the service runs.
            var lines: [Substring] = []
            let deadline = ContinuousClock.now + .seconds(3)
            while lines.count < 6, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
                lines = ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n")
            }
            try #require(lines.count == 6, "\(lines)")
            let pattern = #/^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET /hello\.txt HTTP/1\.1" 200 11 "http://ref\.test/" "test-agent/1"$/#
            #expect(lines[0].wholeMatch(of: pattern) != nil, "\(lines[0])")
            #expect(lines[1].contains("\"GET /missing HTTP/1.1\" 404 "))
            #expect(lines[2].hasSuffix(#""GET /hello.txt HTTP/1.1" 200 11 "-" "a\x22 200 1 \x22\x5C\x09\xC3\xA9""#), "\(lines[2])")
            #expect(lines[3].hasSuffix(#""GET /hello.txt?p=1 HTTP/1.1" 200 11 "-" "-""#), "\(lines[3])")
            #expect(lines[4].wholeMatch(of: #/.*"DELETE /hello\.txt HTTP/1\.1" 405 [1-9]\d* "-" "-"/#) != nil, "\(lines[4])")
            #expect(lines[5].hasSuffix(#""HEAD /missing HTTP/1.1" 404 0 "-" "third""#), "\(lines[5])")
            // Stopping the instance writes what is left and closes the file.
            _ = try curl(["http://127.0.0.1:\(port)/hello.txt"])
            #expect(try host.ctl(["stop", "http"]).status == 0)
            #expect(try String(contentsOf: log, encoding: .utf8).split(separator: "\n").count == 7)
        }
    }

    @Test func theDefaultAccessLogGoesWhereTheHostLogs() async throws {
        // Not under the journal, the host logs to standard error, and so does the access log: plain
        // Combined Log Format lines, written in blocks.
        try await withWebHost { host, port, _ in
            _ = try curl(["-A", "agent/2", "http://127.0.0.1:\(port)/hello.txt"])
            let pattern = #/^127\.0\.0\.1 - - \[[^\]]+\] "GET /hello\.txt HTTP/1\.1" 200 11 "-" "agent/2"$/#
            let deadline = ContinuousClock.now + .seconds(3)
            var found = false
            while !found, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
                found = host.log.split(separator: "\n").contains { $0.wholeMatch(of: pattern) != nil }
            }
            #expect(found, "\(host.log)")
        }
        // Above the info level, the access log is off (its lines are info).
        try await withWebHost(["--set", "host.log-level=warning"]) { host, port, _ in
            _ = try curl(["-A", "agent/3", "http://127.0.0.1:\(port)/hello.txt"])
            try await Task.sleep(for: .milliseconds(300))
            #expect(try host.ctl(["stop", "http"]).status == 0)
            #expect(!host.log.contains("agent/3"))
        }
    }

    @Test func theDefaultWebSiteSaysWhichHostThisIsAndWhatItRuns() async throws {
        try await withHost { host in
            let status = try await host.waitUntilRunning()
            let page = try curl(["http://127.0.0.1:\(try host.port(of: "http", in: status))/"])
            #expect(page.status == 200)
            let html = String(decoding: page.body, as: UTF8.self)
            #expect(html.contains("<h1>Inetinfo for Linux on \(ProcessInfo.processInfo.hostName)</h1>"))
            for service in status.services {
                #expect(html.contains("<tr><td>\(service.name)</td><td>enabled</td><td>\(service.listen[0])</td></tr>"))
            }
        }
    }
}

/// Reads an IMF-fixdate (`Mon, 30 Nov 2026 03:05:47 GMT`) back into seconds, to check a `Date` header.
enum HTTPDateProbe {
    static func seconds(_ text: String) -> Int? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.date(from: text).map { Int($0.timeIntervalSince1970) }
    }
}
