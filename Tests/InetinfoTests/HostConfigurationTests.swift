import Foundation
import InetinfoTestKit
import Testing

/// docs/configuration.md, checked on a running host rather than on the parsed configuration: the forms of
/// `smtp.domains`, several and IPv6 `listen` addresses, which source of a key wins, and a reload that
/// applies some keys at once and defers others, saying so.
@Suite(.serialized, .timeLimit(.minutes(3))) struct HostConfigurationTests {
    /// A temporary folder for configuration files and web roots.
    final class Scratch {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-config-\(UUID().uuidString.prefix(8))")

        init() throws { try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true) }

        deinit { try? FileManager.default.removeItem(at: url) }

        /// Writes `text` to `name` in the folder; returns its path.
        @discardableResult
        func write(_ name: String, _ text: String) throws -> String {
            let file = url.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(text.utf8).write(to: file)
            return file.path
        }
    }

    // MARK: - smtp.domains

    /// One documented form of `smtp.domains` and what it must accept and refuse. `HOSTNAME` stands for the
    /// host name the greeting announces.
    struct DomainsForm: Sendable, CustomTestStringConvertible {
        var name: String
        var settings: [String: String] = [:]
        /// The `[smtp]` table of a configuration file.
        var file: String?
        var accepted: [String]
        var refused: [String]
        var testDescription: String { name }
    }

    static let domainsForms = [
        DomainsForm(name: "default: localhost and the host name", accepted: ["localhost", "LocalHost", "HOSTNAME"],
                    refused: ["example.org", "localhost.example.org"]),
        // Comma-separated, with spaces and capitals: the list replaces the default, and matching is exact
        // (no subdomains, no suffixes) and case-insensitive (RFC 5321 §2.4).
        DomainsForm(name: "comma-separated --set", settings: ["smtp.domains": "Example.ORG, mx-1.example.org"],
                    accepted: ["example.org", "EXAMPLE.org", "mx-1.example.org"],
                    refused: ["localhost", "HOSTNAME", "sub.example.org", "example.org.evil.test", "mx-1.example"]),
        DomainsForm(name: "TOML array", file: "domains = [\"example.net\", \"localhost\"]\n",
                    accepted: ["example.net", "localhost"], refused: ["example.org", "HOSTNAME"]),
        DomainsForm(name: "TOML string, comma-separated", file: "domains = \"example.net,example.com\"\n",
                    accepted: ["example.net", "example.com"], refused: ["localhost", "example.org"]),
    ]

    @Test(arguments: domainsForms)
    func smtpDomainsAcceptExactlyTheListedDomains(_ form: DomainsForm) async throws {
        let scratch = try Scratch()
        var configuration = TestHost.Configuration(settings: form.settings.merging(["http.enabled": "false"]) { $1 })
        if let file = form.file { configuration.arguments = ["--config", try scratch.write("inetinfo.toml", "[smtp]\n" + file)] }
        try await TestHost.with(configuration) { host in
            let client = try SMTPTestClient(port: try host.port(of: "smtp"))
            let greeting = try #require(try client.reply())
            #expect(greeting.hasPrefix("220 "))
            let hostName = String(greeting.dropFirst(4).prefix { $0 != " " })
            #expect(try client.exchange("EHLO domains.test\r\nMAIL FROM:<a@remote.test>\r\n", replies: 2) == ["250", "250"])
            func domains(_ list: [String]) -> [String] { list.map { $0 == "HOSTNAME" ? hostName : $0 } }
            let accepted = domains(form.accepted)
            for domain in accepted {
                try client.send("RCPT TO:<user@\(domain)>\r\n")
                let reply = try client.reply() ?? "EOF"
                #expect(reply.hasPrefix("250"), "\(form.name): RCPT TO:<user@\(domain)>: \(reply)")
            }
            // (A refused entry that is also accepted — a machine named localhost — is not tried.)
            for domain in domains(form.refused) where !accepted.contains(where: { $0.lowercased() == domain.lowercased() }) {
                try client.send("RCPT TO:<user@\(domain)>\r\n")
                let reply = try client.reply() ?? "EOF"
                #expect(reply.hasPrefix("550 5.7.1"), "\(form.name): RCPT TO:<user@\(domain)>: \(reply)")
            }
        }
    }

    // MARK: - listen

    /// `listen` takes several comma-separated addresses, IPv6 ones in brackets: every one answers.
    @Test func severalAndIPv6ListenAddressesAllAnswer() async throws {
        var configuration = TestHost.Configuration(settings: ["smtp.listen": "127.0.0.1:0, [::1]:0", "http.listen": "[::1]:0"])
        configuration.listenFlags = false
        try await TestHost.with(configuration) { host in
            let smtp = try host.service("smtp").listen
            #expect(smtp.count == 2, "smtp listens on \(smtp)")
            for address in smtp {
                let (literal, port) = try Self.split(address)
                let client = try TestSocket(port: port, host: literal)
                let (greeting, end) = client.readText(until: "\r\n")
                #expect(greeting.hasPrefix("220 "), "smtp on \(address): \(greeting.debugDescription) (\(end))")
            }
            #expect(smtp.contains { $0.hasPrefix("127.0.0.1:") } && smtp.contains { $0.hasPrefix("[::1]:") }, "\(smtp)")

            let http = try host.service("http").listen
            #expect(http.count == 1 && http[0].hasPrefix("[::1]:"), "http listens on \(http)")
            let (literal, port) = try Self.split(http[0])
            let client = try TestSocket(port: port, host: literal)
            try client.send("GET / HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n")
            #expect(statusLine(try client.readUntilClosed()) == "HTTP/1.1 200 OK")
        }
    }

    /// `127.0.0.1:2525` → ("127.0.0.1", 2525); `[::1]:2525` → ("::1", 2525).
    static func split(_ address: String) throws -> (String, Int) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw TestError("not HOST:PORT: \(address)")
        }
        let host = address[..<colon]
        return (host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : String(host), port)
    }

    // MARK: - Precedence

    /// Which source wins, on a key with a flag of its own: the file, then every `--set` in order, then the
    /// dedicated flags; the last one to set a key wins — wherever the flag stands on the command line.
    /// Each web root serves `which.txt` naming itself.
    @Test(arguments: [
        ("the file alone", [], nil, "file"),
        ("--set over the file, the later --set over the earlier", ["--set", "http.web-root=ROOT/set1", "--set", "http.web-root=ROOT/set2"], nil, "set2"),
        ("--web-root over --set, even before it", ["--set", "http.web-root=ROOT/set1"], "flag", "flag"),
    ] as [(String, [String], String?, String)])
    func theLastSourceToSetAKeyWins(_ name: String, _ arguments: [String], _ flag: String?, _ expected: String) async throws {
        let scratch = try Scratch()
        let root = scratch.url.path
        for which in ["file", "set1", "set2", "flag"] { try scratch.write("\(which)/which.txt", which) }
        let file = try scratch.write("inetinfo.toml", "[http]\nweb-root = \"\(root)/file\"\n")
        // TestHost puts `--web-root` (from `webRoot`) before the `--config` and `--set` given here.
        var configuration = TestHost.Configuration(webRoot: flag.map { "\(root)/\($0)" }, settings: ["smtp.enabled": "false"])
        configuration.arguments = ["--config", file] + arguments.map { $0.replacingOccurrences(of: "ROOT", with: root) }
        try await TestHost.with(configuration) { host in
            let response = try TCPTestSocket.httpGet(port: try host.port(of: "http"), path: "/which.txt")
            #expect(response.status == 200 && String(decoding: response.body, as: UTF8.self) == expected,
                    "\(name): served \(response.status) \(String(decoding: response.body, as: UTF8.self).debugDescription)")
        }
    }

    // MARK: - Reload

    /// A reload applies `SERVICE.enabled` at once and defers listen addresses to the next start, and its
    /// reply names the deferred key: the file disables HTTP and gives SMTP a second address; HTTP stops,
    /// SMTP keeps serving where it was, and only there.
    @Test func reloadAppliesEnabledAtOnceAndDefersListenSayingSo() async throws {
        let scratch = try Scratch()
        let file = try scratch.write("inetinfo.toml", "[smtp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n")
        var configuration = TestHost.Configuration()
        configuration.listenFlags = false  // a flag would pin the listen address over the file's
        configuration.arguments = ["--config", file]
        try await TestHost.with(configuration) { host in
            let smtpBefore = try host.service("smtp").listen
            #expect(try TCPTestSocket.httpGet(port: try host.port(of: "http")).status == 200)

            try scratch.write("inetinfo.toml", "[smtp]\nlisten = \"127.0.0.1:0,[::1]:0\"\n[http]\nlisten = \"127.0.0.1:0\"\nenabled = false\n")
            let reply = try host.ctl(["reload"])
            #expect(reply.status == 0, "\(reply.stdout)\(reply.stderr)")
            #expect(reply.stdout.contains("smtp.listen"), "the reply does not name the deferred key: \(reply.stdout.debugDescription)")
            #expect(!reply.stdout.contains("http"), "nothing about HTTP is deferred: \(reply.stdout.debugDescription)")

            // Applied at once: HTTP stops.
            try await host.waitForState("http", .stopped)
            #expect(try host.service("http").enabled == false)
            // Deferred: SMTP is where it was, and serves there.
            let smtp = try host.service("smtp")
            #expect(smtp.listen == smtpBefore, "smtp listens on \(smtp.listen), before the reload \(smtpBefore)")
            #expect(smtp.instance == 1 && smtp.state == .running)
            let client = try SMTPTestClient(port: try host.port(of: "smtp"))
            #expect(try client.code() == "220")
        }
    }
}
