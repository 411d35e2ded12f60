import Foundation
import InetinfoTestKit
import NIOConcurrencyHelpers
import Testing

/// Durability under simulated power loss: the host's state directory on powerfs
/// (`scripts/powerloss/powerfs.py`, a FUSE file system that keeps only what was fsynced, like ext4 without
/// a journal), SMTP load from several sessions, the power cut at many points (at random times, and at
/// chosen operations: between the spool file's fsync and its link, between a link into `new/` and the
/// fsync of `new/`, while a Maildir is being created), the host SIGKILLed at the cut, the power restored,
/// the host started again on what survived; then every message that got a 250 must be in `new/` of each
/// of its recipients exactly once, byte for byte, and nothing partial may be in any `new/`.
///
/// Needs root and FUSE (scripts/install-deps.sh installs python3-fusepy). `INETINFO_POWER_CUTS` sets the
/// number of cuts (60). `INETINFO_BINARY` runs it against another build: scripts/powerloss/mutant-check.sh
/// runs it against a host built without the fsync of `new/` and requires it to fail.
@Suite(.serialized, .timeLimit(.minutes(10))) struct PowerLossTests {
    static var cuts: Int { ProcessInfo.processInfo.environment["INETINFO_POWER_CUTS"].flatMap(Int.init) ?? 60 }
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static var powerfs: String { repository.appendingPathComponent("scripts/powerloss/powerfs.py").path }

    @Test func theModelKeepsExactlyWhatWasFlushed() throws {
        let result = try CommandResult.run(Self.repository.appendingPathComponent("scripts/powerloss/selftest.py").path, [])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }

    @Test(arguments: ["journal", "direct"]) func powerCutsLoseNothingAcknowledged(commit: String) async throws {
        let started = ContinuousClock.now
        let disk = try await PowerFS.mount(script: Self.powerfs)
        try await disk.withHosts { host in try await run(disk: disk, commit: commit, host: &host, started: started) }
    }

    /// A host started on a state directory that does not exist yet, one message acknowledged, the power
    /// cut: the message must survive. The HTTP service's settings render `<state>/www` with `mkdir -p` (even
    /// with `http.enabled=false`), so the state directory exists, undurably, before the SMTP service runs:
    /// unless every directory above the mail root is fsynced, the whole tree, acknowledged mail included,
    /// is lost at a power cut (it was, before `MailboxDirectories` synced them).
    @Test func freshStateDirectoryIsDurable() async throws {
        let disk = try await PowerFS.mount(script: Self.powerfs)
        try await disk.withHosts { host in
            var configuration = TestHost.Configuration(settings: ["http.enabled": "false"])
            configuration.stateDirectory = URL(fileURLWithPath: disk.mountPoint + "/state")
            let first = try await TestHost.start(configuration)
            host = first
            let client = try SMTPTestClient(port: try first.port(of: "smtp"))
            _ = try client.code()
            _ = try client.exchange("EHLO fresh.test\r\n")
            let content = LoadClients.message(id: "fresh-1", size: 500)
            let reply = try client.sendMessage(from: "a@remote.test", to: ["user1@localhost"], content: content, useBDAT: true)
            #expect(reply?.hasPrefix("250") == true)
            try disk.command("victim \(first.pid)")
            try disk.command("cut")
            _ = try await first.waitForExit()
            await first.stop()
            try disk.command("on")
            let second = try await TestHost.start(configuration)
            host = second
            let delivered = second.deliveredMessages(to: "user1@localhost").map(\.body)
            // Once lost: the state directory was made (by the default web site's mkdir -p) and its
            // parent never fsynced.
            #expect(delivered == [content], "the acknowledged message survives the power cut")
        }
    }

    /// What is cut, and when, with `smtp.commit = journal`: the record's flush, delivery behind the 250,
    /// the checkpoint's fsyncs.
    enum JournalCutPoint: CaseIterable, CustomStringConvertible {
        case randomTime
        case beforeJournalFlush   // a record written, its flush refused: no 250 for it
        case afterJournalFlush    // acknowledged, nothing delivered yet
        case afterLinkIntoNew     // delivered, neither the file nor `new/` fsynced
        case beforeFsyncOfNew     // the checkpoint's fsync of `new/` refused
        case afterFsyncOfNew      // `new/` durable, the checkpoint slot not yet written
        case afterMkdir           // while a Maildir (or its domain folder) is being created

        var trigger: (command: String, range: ClosedRange<Int>)? {
            switch self {
            case .randomTime: nil
            case .beforeJournalFlush: ("before fsync %d /\\.journal/journal\\.[0-9]+$", 2...40)
            case .afterJournalFlush: ("after fsync %d /\\.journal/journal\\.[0-9]+$", 2...40)
            case .afterLinkIntoNew: ("after link %d /new/", 1...40)
            case .beforeFsyncOfNew: ("before fsyncdir %d /new", 1...20)
            case .afterFsyncOfNew: ("after fsyncdir %d /new", 1...20)
            case .afterMkdir: ("after mkdir %d", 1...12)
            }
        }

        var description: String {
            switch self {
            case .randomTime: "random time"
            case .beforeJournalFlush: "before the journal's flush"
            case .afterJournalFlush: "after the journal's flush"
            case .afterLinkIntoNew: "after link"
            case .beforeFsyncOfNew: "before the checkpoint's fsync(new/)"
            case .afterFsyncOfNew: "after the checkpoint's fsync(new/)"
            case .afterMkdir: "after mkdir"
            }
        }
    }

    /// What is cut, and when, with `smtp.commit = direct`.
    enum CutPoint: CaseIterable, CustomStringConvertible {
        case randomTime
        case afterSpoolFsync      // the file is durable, not yet linked
        case beforeLinkIntoNew    // the same gap, seen from the link
        case afterLinkIntoNew     // linked, `new/` not yet fsynced
        case beforeFsyncOfNew     // the same gap, the fsync refused
        case afterFsyncOfNew      // durable, the spool name not yet removed, no 250 yet
        case afterMkdir           // while a Maildir (or its domain folder) is being created
        case beforeFsyncOfParent  // a new folder made, its parent's fsync refused

        /// The powerfs trigger (nil: cut by the test after a random delay).
        var trigger: (command: String, range: ClosedRange<Int>)? {
            switch self {
            case .randomTime: nil
            case .afterSpoolFsync: ("after fsync %d /\\.spool/", 1...30)
            case .beforeLinkIntoNew: ("before link %d /new/", 1...40)
            case .afterLinkIntoNew: ("after link %d /new/", 1...40)
            case .beforeFsyncOfNew: ("before fsyncdir %d /new", 1...30)
            case .afterFsyncOfNew: ("after fsyncdir %d /new", 1...30)
            case .afterMkdir: ("after mkdir %d", 1...12)
            case .beforeFsyncOfParent: ("before fsyncdir %d \\.test(/u[0-9]+)?$", 1...10)
            }
        }

        var description: String {
            switch self {
            case .randomTime: "random time"
            case .afterSpoolFsync: "after spool fsync"
            case .beforeLinkIntoNew: "before link"
            case .afterLinkIntoNew: "after link"
            case .beforeFsyncOfNew: "before fsync(new/)"
            case .afterFsyncOfNew: "after fsync(new/)"
            case .afterMkdir: "after mkdir"
            case .beforeFsyncOfParent: "before fsync of a new folder's parent"
            }
        }
    }

    private func run(disk: PowerFS, commit: String, host: inout TestHost?, started: ContinuousClock.Instant) async throws {
        let cuts = Self.cuts
        let points: [(description: String, trigger: (command: String, range: ClosedRange<Int>)?)] = commit == "journal"
            ? JournalCutPoint.allCases.map { ($0.description, $0.trigger) } : CutPoint.allCases.map { ($0.description, $0.trigger) }
        var configuration = TestHost.Configuration(settings: [
            "http.enabled": "false",
            "smtp.commit": commit,
            // Small, so that the ring wraps many times under the load (and powerfs keeps it in memory).
            "smtp.journal-size": "1048576",
            "smtp.domains": (["localhost"] + (0...cuts).map { "d\($0).test" }).joined(separator: ","),
        ])
        // The state directory on the power-loss disk, made durable here as an installer would: a host that
        // makes it itself does not make it durable (see `freshStateDirectoryIsDurable`). Its control socket
        // and log stay in the host's own temporary folder, off the mount.
        configuration.stateDirectory = URL(fileURLWithPath: try disk.makeDurableDirectory("state"))
        var audit = PowerLossAudit(mailRoot: disk.mountPoint + "/state/mail")
        var sent: [String: PowerLoad.Message] = [:]
        var fired: [String: (cuts: Int, lost: Int)] = [:]
        var fallbacks = 0
        var lostSoFar = 0
        var spoolLeftAfterRestart = 0
        for cycle in 0..<cuts {
            let instance = try await TestHost.start(configuration)
            host = instance
            spoolLeftAfterRestart += instance.spooledFiles().count
            // What the previous cut left, before new load.
            audit.scan(sent)
            if cycle > 0 {
                let point = points[(cycle - 1) % points.count]
                let lostNow = audit.lostMessages(sent).count
                fired[point.description, default: (0, 0)].lost += lostNow - lostSoFar
                lostSoFar = lostNow
            }
            let point = points[cycle % points.count]
            let cut = try await disk.cutUnderLoad(instance, cycle: cycle,
                                                  arm: point.trigger.map { String(format: $0.command, Int.random(in: $0.range)) })
            if cut.fellBack { fallbacks += 1 }
            sent.merge(cut.messages) { $1 }
            fired[point.description, default: (0, 0)].cuts += 1
            await instance.stop()
            host = nil
            try disk.command("on")
        }
        // The host on what survived the last cut: its start cleans the spool.
        let final = try await TestHost.start(configuration)
        host = final
        audit.scan(sent)
        let lastPoint = points[(cuts - 1) % points.count]
        fired[lastPoint.description, default: (0, 0)].lost += audit.lostMessages(sent).count - lostSoFar
        let spoolLeft = final.spooledFiles().count + spoolLeftAfterRestart
        let status = try disk.status()
        let lost = audit.lostMessages(sent)
        let acknowledged = sent.values.filter(\.acknowledged)
        let elapsed = ContinuousClock.now - started
        print("""
            power loss (smtp.commit = \(commit)): \(status["cuts"] ?? "?") cuts (\(fallbacks) armed cuts fell back to a cut at a random time), \
            \(sent.count) messages attempted, \(acknowledged.count) acknowledged \
            (\(acknowledged.reduce(0) { $0 + $1.recipients.count }) deliveries), \(audit.found) files found in new/, \
            lost \(lost.count) acknowledged messages (\(audit.missingDeliveries(sent)) deliveries), \
            duplicated \(audit.duplicates(sent).count), partial or foreign files in new/ \(audit.corrupt.count), \
            delivered without 250 \(audit.deliveredWithoutAcknowledgement(sent)), spool files after restarts \(spoolLeft), \
            \(Int(elapsed.components.seconds)) s
            by cut point: \(fired.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.cuts) cuts, lost \($0.value.lost)" }.joined(separator: "; "))
            """ + (lost.isEmpty ? "" : "\nlost: \(lost.prefix(10))") + (audit.corrupt.isEmpty ? "" : "\ncorrupt: \(audit.corrupt.prefix(5))"))
        #expect(lost.count == 0, "acknowledged messages lost: \(lost.prefix(10))")
        #expect(audit.corrupt.count == 0, "partial or foreign files in new/: \(audit.corrupt.prefix(5))")
        #expect(audit.duplicates(sent).isEmpty, "messages twice in a Maildir: \(audit.duplicates(sent).prefix(5))")
        #expect(spoolLeft == 0, "the restarted host left files in the spool")
        #expect(Int(status["cuts"] ?? "") == cuts)
        #expect(acknowledged.count >= cuts, "messages were acknowledged between cuts")
        #expect(fallbacks * 2 < cuts, "most armed cuts fired at their operation")
    }
}

/// A simulated disk steered through its control file (`.powerloss` of powerfs and of blockfs): one
/// command per line written, `key value` status lines read.
protocol PowerControlled {
    var controlFile: String { get }
    /// Unmounts the disk (and what is mounted from it) and removes its folder.
    func release() async
}

extension PowerControlled {
    func command(_ line: String) throws {
        let fd = open(controlFile, O_WRONLY)
        guard fd >= 0 else { throw TestHostError("open \(controlFile): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else {
            throw TestHostError("\(controlFile) refused '\(line)': \(String(cString: strerror(errno)))")
        }
    }

    func status() throws -> [String: String] {
        let fd = open(controlFile, O_RDONLY)
        guard fd >= 0 else { throw TestHostError("open \(controlFile): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(fd, &chunk, chunk.count)
            guard count > 0 else { break }
            text += chunk[..<count]
        }
        var result: [String: String] = [:]
        for line in String(decoding: text, as: UTF8.self).split(separator: "\n") {
            let parts = line.split(separator: " ", maxSplits: 1)
            result[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return result
    }

    var isPoweredOff: Bool { get throws { try status()["power"] == "off" } }

    /// Runs `body`, which keeps in its argument the host it started last; then stops that host and
    /// releases the disk, also when `body` throws (after printing the end of that host's log).
    func withHosts(_ body: (inout TestHost?) async throws -> Void) async throws {
        var host: TestHost?
        do {
            try await body(&host)
        } catch {
            if let host { print("host log (last instance):\n\(host.log.suffix(3000))") }
            await host?.stop()
            await release()
            throw error
        }
        await host?.stop()
        await release()
    }

    /// One cut under SMTP load: `instance` dies with the power (the disk SIGKILLs it), 4 sessions send
    /// meanwhile, and the power goes at the trigger `arm` (the text after "arm "; a trigger that has not
    /// fired within 4 s, too few such operations, becomes a cut then) or after 30–700 ms. Returns once the
    /// host is dead and the load stopped: what was sent, and whether an armed cut fell back.
    func cutUnderLoad(_ instance: TestHost, cycle: Int, arm: String?) async throws
        -> (messages: [String: PowerLoad.Message], fellBack: Bool) {
        try command("victim \(instance.pid)")
        let load = PowerLoad(cycle: cycle)
        load.start(clients: 4, port: try instance.port(of: "smtp"))
        var fellBack = false
        if let arm {
            try command("arm " + arm)
            if (try? await Deadline.eventually("the armed cut", timeout: .seconds(4), { try isPoweredOff ? true : nil })) == nil {
                fellBack = true
                try command("cut")
            }
        } else {
            try await Task.sleep(for: .milliseconds(Int.random(in: 30...700)))
            try command("cut")
        }
        let exit = try await instance.waitForExit()
        #expect(exit.reason == .uncaughtSignal && exit.status == SIGKILL, "the host died with the power")
        await load.stop()
        return (load.messages, fellBack)
    }
}

/// The mounted powerfs (its control file is `.powerloss` at the root of the mount).
final class PowerFS: PowerControlled, @unchecked Sendable {
    let base: String
    let mountPoint: String
    private let process: Process
    var controlFile: String { mountPoint + "/.powerloss" }

    private init(base: String, mountPoint: String, process: Process) {
        self.base = base
        self.mountPoint = mountPoint
        self.process = process
    }

    /// Mounts a new powerfs in a temporary folder. It unmounts itself if this process dies (or after
    /// 15 minutes whatever happens), so a crashed test leaves no mount behind.
    static func mount(script: String) async throws -> PowerFS {
        guard getuid() == 0, FileManager.default.fileExists(atPath: "/dev/fuse") else {
            throw TestHostError("the power-loss suite needs root and /dev/fuse")
        }
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-powerloss-\(UUID().uuidString.prefix(8))").path
        let mountPoint = base + "/mnt"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: script)
        process.arguments = [mountPoint, "--watch-pid", "\(getpid())", "--lifetime", "900"]
        let log = base + "/powerfs.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let disk = PowerFS(base: base, mountPoint: mountPoint, process: process)
        do {
            _ = try await Deadline.eventually("powerfs to mount", timeout: .seconds(15)) { () -> Bool? in
                guard process.isRunning else { throw TestHostError("powerfs ended") }
                return FileManager.default.fileExists(atPath: mountPoint + "/.powerloss") ? true : nil
            }
        } catch {
            await disk.release()
            throw TestHostError("powerfs did not mount (\(error)): \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
        }
        return disk
    }

    /// Makes `name` at the root of the mount, durably (mkdir, then an fsync of the root); returns its path.
    func makeDurableDirectory(_ name: String) throws -> String {
        let path = mountPoint + "/" + name
        guard mkdir(path, 0o755) == 0 else { throw TestHostError("mkdir \(path): \(String(cString: strerror(errno)))") }
        let fd = open(mountPoint, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        guard fd >= 0, fsync(fd) == 0 else { throw TestHostError("fsync \(mountPoint): \(String(cString: strerror(errno)))") }
        return path
    }

    /// Ends powerfs (SIGTERM unmounts), unmounts lazily if it did not, removes the folder.
    func release() async {
        if process.isRunning {
            process.terminate()
            let process = self.process
            if (try? await Deadline.eventually("powerfs to end", timeout: .seconds(5)) { process.isRunning ? nil : true }) == nil {
                kill(process.processIdentifier, SIGKILL)
            }
        }
        _ = try? CommandResult.run("/bin/umount", ["-l", mountPoint])
        try? FileManager.default.removeItem(atPath: base)
    }
}

/// SMTP sessions that deliver to several recipients each, by DATA and BDAT, into Maildirs that exist
/// (`user0…5@localhost`, and those of earlier cycles) and Maildirs that this cycle creates (`dN.test`).
final class PowerLoad: @unchecked Sendable {
    struct Message: Sendable {
        var recipients: [String]
        var content: Data
        var acknowledged: Bool
    }

    let cycle: Int
    private let stopFlag = NIOLockedValueBox(false)
    private let box = NIOLockedValueBox([String: Message]())
    private let finished = NIOLockedValueBox(0)
    private var threads = 0

    init(cycle: Int) { self.cycle = cycle }

    var messages: [String: Message] { box.withLockedValue { $0 } }

    func start(clients: Int, port: Int) {
        let cycle = self.cycle
        for client in 0..<clients {
            threads += 1
            let thread = Thread { [self] in
                defer { finished.withLockedValue { $0 += 1 } }
                var sequence = 0
                while !stopFlag.withLockedValue({ $0 }) {
                    guard let connection = try? SMTPTestClient(port: port, timeoutSeconds: 5),
                          (try? connection.code()) == "220", (try? connection.exchange("EHLO power.test\r\n")) == ["250"]
                    else {
                        Thread.sleep(forTimeInterval: 0.02)
                        continue
                    }
                    while !stopFlag.withLockedValue({ $0 }) {
                        sequence += 1
                        let id = "pl\(cycle)-\(client)-\(sequence)"
                        let recipients = Self.recipients(cycle: cycle)
                        let content = LoadClients.message(id: id, size: Int.random(in: 200...24_000))
                        box.withLockedValue { $0[id] = Message(recipients: recipients, content: content, acknowledged: false) }
                        let reply = try? connection.sendMessage(from: "load@remote.test", to: recipients, content: content,
                                                                useBDAT: sequence % 2 == 0)
                        guard let reply, reply.hasPrefix("250") else { break }
                        box.withLockedValue { $0[id]?.acknowledged = true }
                    }
                }
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// One to three distinct recipients: existing Maildirs, and new ones of this cycle's domain.
    static func recipients(cycle: Int) -> [String] {
        var result: Set<String> = []
        for _ in 0..<Int.random(in: 1...3) {
            switch Int.random(in: 0..<10) {
            case 0..<4: result.insert("user\(Int.random(in: 0...5))@localhost")
            case 4..<7: result.insert("u\(Int.random(in: 0...7))@d\(cycle).test")
            default:
                let earlier = Int.random(in: 0...cycle)
                result.insert("u\(Int.random(in: 0...7))@d\(earlier).test")
            }
        }
        return result.sorted()
    }

    func stop() async {
        stopFlag.withLockedValue { $0 = true }
        let total = threads
        _ = try? await Deadline.eventually("load clients to stop", timeout: .seconds(30)) {
            finished.withLockedValue { $0 } == total ? true : nil
        }
    }
}

/// What the Maildirs hold, compared with what was sent. Files are read once (a name in `new/` always
/// holds the same message), and checked again for presence on every scan.
struct PowerLossAudit {
    let mailRoot: String
    /// `new/` file path → the id of the message it holds, intact.
    private(set) var intact: [String: String] = [:]
    /// Files in `new/` that are not a whole message sent to that Maildir.
    private(set) var corrupt: Set<String> = []
    /// Message id → Maildir → copies, as of the last scan.
    private var copies: [String: [String: Int]] = [:]

    init(mailRoot: String) { self.mailRoot = mailRoot }

    var found: Int { intact.count }

    mutating func scan(_ sent: [String: PowerLoad.Message]) {
        let manager = FileManager.default
        var present: Set<String> = []
        copies = [:]
        for domain in ((try? manager.contentsOfDirectory(atPath: mailRoot)) ?? []) where !domain.hasPrefix(".") {
            for local in (try? manager.contentsOfDirectory(atPath: "\(mailRoot)/\(domain)")) ?? [] {
                let address = "\(local)@\(domain)"
                let new = "\(mailRoot)/\(domain)/\(local)/new"
                for name in (try? manager.contentsOfDirectory(atPath: new)) ?? [] {
                    let path = "\(new)/\(name)"
                    present.insert(path)
                    if intact[path] == nil, !corrupt.contains(path) {
                        let content = (try? Data(contentsOf: URL(fileURLWithPath: path))) ?? Data()
                        let body = DeliveredMessage.body(of: content)
                        if let id = MailAudit.messageID(in: body), let message = sent[id], message.content == body,
                           message.recipients.contains(address) {
                            intact[path] = id
                        } else {
                            corrupt.insert(path)
                        }
                    }
                    if let id = intact[path] { copies[id, default: [:]][address, default: 0] += 1 }
                }
            }
        }
        // A file seen intact once and gone now was lost too: it no longer counts.
        intact = intact.filter { present.contains($0.key) }
    }

    /// Acknowledged messages missing from at least one recipient's `new/`.
    func lostMessages(_ sent: [String: PowerLoad.Message]) -> [String] {
        sent.filter { id, message in
            message.acknowledged && message.recipients.contains { (copies[id]?[$0] ?? 0) == 0 }
        }.keys.sorted()
    }

    func missingDeliveries(_ sent: [String: PowerLoad.Message]) -> Int {
        sent.reduce(0) { total, entry in
            entry.value.acknowledged ? total + entry.value.recipients.filter { (copies[entry.key]?[$0] ?? 0) == 0 }.count : total
        }
    }

    func duplicates(_ sent: [String: PowerLoad.Message]) -> [String] {
        copies.filter { $0.value.values.contains { $0 > 1 } }.keys.sorted()
    }

    func deliveredWithoutAcknowledgement(_ sent: [String: PowerLoad.Message]) -> Int {
        copies.keys.filter { sent[$0]?.acknowledged == false }.count
    }
}
