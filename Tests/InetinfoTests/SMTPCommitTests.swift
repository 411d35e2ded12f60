import Foundation
import InetinfoTestKit
import Testing

/// What docs/smtp.md ("Delivery that loses nothing") says about the commit of a message, over real sockets
/// and real files: with `smtp.commit = direct` a storage failure is `451 4.3.0` and leaves nothing in any
/// `new/`, also when some recipients' links were already made; with the journal the message is
/// acknowledged and its delivery retried until the Maildir can take it; and while a message is being
/// committed the session stops reading, so that pipelined input waits in the socket, not in the host's memory.
@Suite(.serialized, .timeLimit(.minutes(3))) struct SMTPCommitTests {
    /// The spool file is made after the 354 has gone out (docs/smtp.md): when it cannot be made (here a
    /// regular file stands where the spool folder should be: ENOTDIR stops root too), the end of the
    /// message, DATA or BDAT, gets `451 4.3.0`, nothing reaches `new/`, and the session goes on; once the
    /// folder can be made again, the next message is stored.
    @Test func aSpoolFileThatCannotBeMadeAnswers451AtTheEndOfTheMessage() async throws {
        try await TestHost.with(.init(settings: ["http.enabled": "false"])) { host in
            let spool = host.stateDirectory.appendingPathComponent("mail/.spool")
            try FileManager.default.removeItem(at: spool)
            try Data("not a directory\n".utf8).write(to: spool)

            let client = try SMTPTestClient(port: try host.port(of: "smtp"))
            #expect(try client.code() == "220")
            #expect(try client.exchange("EHLO spool.test\r\n") == ["250"])
            let content = Data("Subject: no spool\r\n\r\nnowhere to put it\r\n".utf8)
            for useBDAT in [false, true] {
                let refused = try client.sendMessage(from: "a@remote.test", to: ["bob@localhost"], content: content, useBDAT: useBDAT)
                #expect(refused?.hasPrefix("451 4.3.0") == true, "BDAT \(useBDAT): \(refused ?? "connection closed")")
            }
            #expect(host.deliveredMessages(to: "bob@localhost").isEmpty)

            try FileManager.default.removeItem(at: spool)
            let accepted = try client.sendMessage(from: "a@remote.test", to: ["bob@localhost"], content: content, useBDAT: false)
            #expect(accepted?.hasPrefix("250") == true, "reply: \(accepted ?? "connection closed")")
            let delivered = try await Deadline.eventually("the message in new/", timeout: .seconds(5)) { () -> Int? in
                let count = host.deliveredMessages(to: "bob@localhost").count
                return count > 0 ? count : nil
            }
            #expect(delivered == 1)
            #expect(try host.service("smtp").instance == 1, "no failure, no restart")
        }
    }

    /// Two recipients; the second one's Maildir has a regular file where `new/` should be, so its link
    /// fails (ENOTDIR: unlike a permission, this stops root too) after the first recipient's Maildir was
    /// made and its link into `new/` made (mailboxes are committed in sorted order: `first` before `second`).
    @Test func aStorageFailureAnswers451AndRemovesTheLinksAlreadyMade() async throws {
        try await TestHost.with(.init(settings: ["http.enabled": "false", "smtp.commit": "direct"])) { host in
            let broken = host.maildir(for: "second@localhost")
            for folder in ["tmp", "cur"] {
                try FileManager.default.createDirectory(at: broken.appendingPathComponent(folder), withIntermediateDirectories: true)
            }
            try Data("not a directory\n".utf8).write(to: broken.appendingPathComponent("new"))

            let client = try SMTPTestClient(port: try host.port(of: "smtp"))
            #expect(try client.code() == "220")
            #expect(try client.exchange("EHLO commit.test\r\n") == ["250"])
            let content = Data("Subject: two recipients\r\n\r\none of them cannot be stored\r\n".utf8)
            let refused = try client.sendMessage(from: "a@remote.test", to: ["first@localhost", "second@localhost"],
                                                 content: content, useBDAT: false)
            #expect(refused?.hasPrefix("451 4.3.0") == true, "reply: \(refused ?? "connection closed")")

            // The first recipient's Maildir was made (the commit got that far) but its new/ is empty again.
            let firstNew = host.maildir(for: "first@localhost").appendingPathComponent("new").path
            var isDirectory: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: firstNew, isDirectory: &isDirectory) && isDirectory.boolValue,
                    "first@localhost's Maildir was not even created: the failure came before any link")
            #expect(host.deliveredMessages(to: "first@localhost").isEmpty, "a link made before the failure is left in new/")
            #expect(host.spooledFiles().isEmpty, "the refused message is left in the spool: \(host.spooledFiles())")
            #expect(try Data(contentsOf: broken.appendingPathComponent("new")) == Data("not a directory\n".utf8))

            // The session goes on, and the same message to the first recipient alone is stored once.
            let accepted = try client.sendMessage(from: "a@remote.test", to: ["first@localhost"], content: content, useBDAT: true)
            #expect(accepted?.hasPrefix("250 ") == true, "reply: \(accepted ?? "connection closed")")
            #expect(host.deliveredMessages(to: "first@localhost").map(\.body) == [content])
        }
    }

    /// The same broken Maildir with the journal: the message is safe once its record is flushed, so it is
    /// acknowledged; the first recipient has it at once, the second's delivery fails and is retried, and
    /// gets there, once, when the operator removes the obstacle. Meanwhile the journal keeps its record.
    @Test func withTheJournalAFailedDeliveryIsRetriedUntilItSucceeds() async throws {
        try await TestHost.with(.init(settings: ["http.enabled": "false"])) { host in
            let broken = host.maildir(for: "second@localhost")
            try FileManager.default.createDirectory(at: broken, withIntermediateDirectories: true)
            try Data("not a directory\n".utf8).write(to: broken.appendingPathComponent("new"))

            let client = try SMTPTestClient(port: try host.port(of: "smtp"))
            #expect(try client.code() == "220")
            #expect(try client.exchange("EHLO commit.test\r\n") == ["250"])
            let content = Data("Subject: two recipients\r\n\r\none of them cannot be stored yet\r\n".utf8)
            let accepted = try client.sendMessage(from: "a@remote.test", to: ["first@localhost", "second@localhost"],
                                                  content: content, useBDAT: false)
            #expect(accepted?.hasPrefix("250 ") == true, "reply: \(accepted ?? "connection closed")")
            #expect(!host.awaitDeliveries(timeout: .milliseconds(500)), "the spool keeps the message while its delivery fails")
            #expect(host.log.contains("delivery into the Maildir failed; retrying"))

            try FileManager.default.removeItem(at: broken.appendingPathComponent("new"))
            #expect(host.awaitDeliveries(timeout: .seconds(5)), "the retry delivered it")
            #expect(host.deliveredMessages(to: "first@localhost").map(\.body) == [content])
            #expect(host.deliveredMessages(to: "second@localhost").map(\.body) == [content])
        }
    }

    /// A graceful stop waits for the deliveries behind the last 250s and checkpoints them: the next start
    /// on the same state directory replays nothing, and every message is in `new/` once.
    @Test func aCleanStopLeavesTheJournalWithNothingToReplay() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("clean-stop-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: state) }
        var configuration = TestHost.Configuration(settings: ["http.enabled": "false"])
        configuration.stateDirectory = state
        let first = try await TestHost.start(configuration)
        var contents: [Data] = []
        do {
            let client = try SMTPTestClient(port: try first.port(of: "smtp"))
            #expect(try client.code() == "220")
            #expect(try client.exchange("EHLO stop.test\r\n") == ["250"])
            for number in 0..<20 {
                let content = Data("Subject: \(number)\r\n\r\nsent just before the stop\r\n".utf8)
                let reply = try client.sendMessage(from: "a@remote.test", to: ["u@localhost"], content: content, useBDAT: number % 2 == 0)
                #expect(reply?.hasPrefix("250 ") == true)
                contents.append(content)
            }
        } catch {
            await first.stop()
            throw error
        }
        first.signal(SIGTERM)
        let exit = try await first.waitForExit()
        #expect(exit.status == 0, "a clean stop")
        await first.stop()
        try await TestHost.with(configuration) { second in
            #expect(!second.log.contains("journal replayed"), "the clean stop left records to replay")
            #expect(Set(second.deliveredMessages(to: "u@localhost").map(\.body)) == Set(contents))
            #expect(second.deliveredMessages(to: "u@localhost").count == contents.count)
        }
    }

    /// The commit of a first message is held on a frozen file system: the Maildir of `u@frozen.test` is
    /// on an ext4 loop device mounted at `mail/frozen.test` and frozen (fsfreeze), so creating it blocks
    /// inside the commit, while the spool (on the state directory's own file system) is not affected.
    /// Meanwhile the client pipelines a second transaction, `BDAT` with 48 MiB of content, reading
    /// nothing. If the session went on reading during the commit, the host would take all 48 MiB (into
    /// its memory: the engine takes no input while a delivery is pending); as it stops reading, the
    /// kernel's socket buffers fill and the client is pushed back after a few MiB, with the host's memory
    /// flat. After the thaw the first message gets `451 4.3.0` (a Maildir on another file system cannot be
    /// hard-linked), and the pipelined transaction is answered in order and stored intact.
    @Test(.enabled(if: getuid() == 0, "needs root: a loop device and fsfreeze"))
    func aCommitInProgressStopsReadingSoPipelinedInputWaitsInTheSocket() async throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-frozen-\(UUID().uuidString.prefix(8))")
        let state = scratch.appendingPathComponent("state")
        let mountPoint = state.appendingPathComponent("mail/frozen.test")
        try FileManager.default.createDirectory(at: mountPoint, withIntermediateDirectories: true)
        let disk: FreezableDisk
        do {
            disk = try FreezableDisk(image: scratch.appendingPathComponent("disk.img").path, mountPoint: mountPoint.path)
        } catch {
            try? FileManager.default.removeItem(at: scratch)
            throw error
        }
        // The direct way, whose commit creates the Maildir before the reply (the journal's commit touches only
        // the journal, on the unfrozen disk); the session's reading is the same code in both modes.
        var configuration = TestHost.Configuration(settings: [
            "http.enabled": "false", "smtp.domains": "localhost,frozen.test", "smtp.max-message-size": "67108864",
            "smtp.commit": "direct",
        ])
        configuration.stateDirectory = state
        do {
            try await TestHost.with(configuration) { host in
                do {
                    try await Self.pipelineDuringAHeldCommit(host: host, disk: disk)
                } catch {
                    disk.thaw()  // before the host is stopped: its commit thread waits on the frozen disk
                    throw error
                }
                disk.thaw()
            }
        } catch {
            disk.remove()
            try? FileManager.default.removeItem(at: scratch)
            throw error
        }
        disk.remove()
        try? FileManager.default.removeItem(at: scratch)
    }

    private static func pipelineDuringAHeldCommit(host: TestHost, disk: FreezableDisk) async throws {
        let client = try TestSocket(port: try host.port(of: "smtp"))
        var replies = SMTPReplies(client)
        #expect(replies.next(1).first?.hasPrefix("220 ") == true)
        try client.send("EHLO frozen.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<u@frozen.test>\r\nDATA\r\n")
        let opening = replies.next(4)
        #expect(opening.map { String($0.prefix(3)) } == ["250", "250", "250", "354"], "\(opening)")

        try disk.freeze()
        let baselineRSS = HostileSupport.memory(of: host.pid).rss
        // The first message ends, and the second transaction follows at once, its content flooded.
        let size = 48 << 20
        let unit = Array("pipelined while the first message commits: 0123456789 abcdefghij\r\n".utf8)
        try client.send("Subject: held\r\n\r\nheld by a frozen disk\r\n.\r\n"
                        + "MAIL FROM:<a@remote.test>\r\nRCPT TO:<after@localhost>\r\nBDAT \(size) LAST\r\n")
        let flood = client.flood(unit, total: size, stall: .seconds(2), deadline: .seconds(40), hostPID: host.pid,
                                 baselineRSS: baselineRSS)
        print("[commit] pipelined during a held commit: \(flood); host RSS before \(HostileSupport.mib(baselineRSS))")
        #expect(flood.stopped.hasPrefix("back-pressure"), "the host kept reading during the commit: \(flood)")
        #expect(flood.sent < size / 2, "the host took \(HostileSupport.mib(flood.sent)) during the commit")
        #expect(flood.peakRSS - baselineRSS < 16 << 20, "host RSS grew by \(HostileSupport.mib(flood.peakRSS - baselineRSS))")
        // No reply either: the first message is still being committed.
        let early = client.read(timeout: .milliseconds(200))
        #expect(early.count == 0, "answered during the commit: \(String(decoding: early.data, as: UTF8.self))")

        disk.thaw()
        let afterThaw = replies.next(3)
        #expect(afterThaw.first?.hasPrefix("451 4.3.0") == true, "the held message: \(afterThaw)")
        #expect(afterThaw.dropFirst().map { String($0.prefix(3)) } == ["250", "250"], "MAIL and RCPT pipelined behind it: \(afterThaw)")
        // The rest of the content, then the answer to the whole BDAT.
        // The flood sent exactly the first `flood.sent` bytes of `unit` repeated: the content is that
        // pattern, `size` bytes long.
        var content: [UInt8] = []
        content.reserveCapacity(size + unit.count)
        while content.count < size { content += unit }
        content.removeLast(content.count - size)
        try client.send(Array(content[flood.sent...]), timeout: .seconds(60))
        let final = replies.next(1, timeout: .seconds(60))
        #expect(final.first?.hasPrefix("250 ") == true, "the pipelined message: \(final)")

        let expected = Data(content)
        let delivered = host.deliveredMessages(to: "after@localhost")
        #expect(delivered.count == 1 && delivered.first?.body == expected,
                "after@localhost holds \(delivered.map(\.body.count)) bytes, expected one message of \(size)")
        #expect(host.deliveredMessages(to: "u@frozen.test").isEmpty)
        #expect(host.spooledFiles().isEmpty, "\(host.spooledFiles())")
    }
}

/// SMTP replies read from a ``TestSocket``, multi-line replies joined by "\n" (as `SMTPTestClient` reads
/// them): for a session that must also flood without blocking, which `SMTPTestClient`'s blocking socket
/// cannot.
private struct SMTPReplies {
    let socket: TestSocket
    private var buffer: [UInt8] = []

    init(_ socket: TestSocket) { self.socket = socket }

    /// The next `count` replies; fewer if the connection closes or `timeout` passes first.
    mutating func next(_ count: Int, timeout: Duration = .seconds(10)) -> [String] {
        let deadline = ContinuousClock.now + timeout
        var replies: [String] = []
        var lines: [String] = []
        while replies.count < count {
            if let newline = buffer.firstIndex(of: 0x0A) {
                var line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                if line.last == 0x0D { line.removeLast() }
                lines.append(String(decoding: line, as: UTF8.self))
                if line.count < 4 || line[3] == UInt8(ascii: " ") {
                    replies.append(lines.joined(separator: "\n"))
                    lines = []
                }
                continue
            }
            let left = deadline - .now
            guard left > .zero else { break }
            let chunk = socket.read(until: [0x0A], timeout: left)
            buffer += chunk.data
            if chunk.end != .found && chunk.data.isEmpty { break }
        }
        return replies
    }
}

/// A small ext4 file system on a loop device, mounted at `mountPoint`, that a test can freeze
/// (`fsfreeze`): every change to it then blocks, uninterruptibly, until it is thawed. Root only. Thaw it
/// before stopping a host that may be waiting on it, and ``remove()`` it when done.
final class FreezableDisk {
    let image: String
    let mountPoint: String
    private var frozen = false

    init(image: String, mountPoint: String, megabytes: Int = 16) throws {
        self.image = image
        self.mountPoint = mountPoint
        guard FileManager.default.createFile(atPath: image, contents: nil), truncate(image, off_t(megabytes << 20)) == 0 else {
            throw TestHostError("cannot create \(image)")
        }
        try Self.run("mkfs.ext4", ["-q", "-F", image])
        try Self.run("mount", ["-o", "loop", image, mountPoint])
    }

    func freeze() throws {
        try Self.run("fsfreeze", ["--freeze", mountPoint])
        frozen = true
    }

    func thaw() {
        guard frozen else { return }
        _ = try? Self.run("fsfreeze", ["--unfreeze", mountPoint])
        frozen = false
    }

    /// Thaws, unmounts (which frees the loop device) and deletes the image.
    func remove() {
        thaw()
        _ = try? Self.run("umount", [mountPoint])
        unlink(image)
    }

    private static func run(_ tool: String, _ arguments: [String]) throws {
        guard let path = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map({ "\($0)/\(tool)" })
            .first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else { throw TestHostError("\(tool) is not installed") }
        let result = try CommandResult.run(path, arguments)
        guard result.status == 0 else { throw TestHostError("\(tool) \(arguments.joined(separator: " ")): \(result.stderr)") }
    }
}
