import Foundation
import InetinfoTestKit
import Testing

/// Durability under simulated power loss one layer down: the state directory on a real ext4, mounted from
/// a loop device whose backing file is a disk with a volatile write cache (`scripts/powerloss/blockfs.py`).
/// This is the path the journal takes on ext4 (docs/smtp.md): deliveries behind the 250 fsync nothing,
/// and each checkpoint makes them durable with one `syncfs(2)`, which powerfs (a FUSE file system) never
/// sees; and the direct way's fsyncs against ext4 itself rather than a model of it. The disk keeps what was flushed and, of what was written since, a random half of the blocks;
/// the host is SIGKILLed at the cut, the file system mounted again (ext4 replays its own journal), the host
/// started on it (ours replays what follows its checkpoint). Then every message that got a 250 must be in
/// `new/` of each recipient exactly once, byte for byte, and nothing partial may be in any `new/`.
///
/// Needs root, FUSE and loop devices (scripts/install-deps.sh installs python3-fusepy, e2fsprogs and mount). `INETINFO_BLOCK_POWER_CUTS` sets the number of cuts (24).
/// scripts/powerloss/mutant-check.sh runs it against a host whose checkpoint skips the `syncfs` and
/// requires it to fail.
@Suite(.serialized, .timeLimit(.minutes(10))) struct BlockPowerLossTests {
    static var cuts: Int { ProcessInfo.processInfo.environment["INETINFO_BLOCK_POWER_CUTS"].flatMap(Int.init) ?? 24 }
    static var blockfs: String { PowerLossTests.repository.appendingPathComponent("scripts/powerloss/blockfs.py").path }

    /// The model itself, through the kernel as the loop device uses it: what a flush covered survives a
    /// cut, what was written after it does not (with `--keep 0`), and nothing is readable while it is off.
    @Test func theDiskKeepsExactlyWhatWasFlushed() async throws {
        let disk = try await BlockDisk.make(script: Self.blockfs, keep: 0, withFileSystem: false)
        try await disk.withHosts { _ in try checkModel(disk) }
    }

    private func checkModel(_ disk: BlockDisk) throws {
        let path = disk.device + "/disk"
        let first = [UInt8](repeating: 0xA1, count: 8192), second = [UInt8](repeating: 0xB2, count: 4096)
        let fd = open(path, O_RDWR)
        try #require(fd >= 0)
        #expect(pwrite(fd, first, first.count, 0) == first.count)
        #expect(fsync(fd) == 0)
        #expect(pwrite(fd, second, second.count, 4096) == second.count)  // over the second half, unflushed
        #expect(pwrite(fd, second, second.count, 65536) == second.count)
        try disk.command("cut")
        var buffer = [UInt8](repeating: 0, count: 4096)
        let readWhileOff = pread(fd, &buffer, buffer.count, 0), readError = errno
        let writeWhileOff = pwrite(fd, second, second.count, 0), writeError = errno
        #expect(readWhileOff == -1 && readError == EIO, "the disk is off")
        #expect(writeWhileOff == -1 && writeError == EIO)
        close(fd)
        try disk.command("on")
        let again = open(path, O_RDONLY)
        try #require(again >= 0)
        defer { close(again) }
        var read = [UInt8](repeating: 0, count: 8192)
        #expect(pread(again, &read, read.count, 0) == read.count)
        #expect(read == first, "the flushed blocks, as flushed")
        #expect(pread(again, &buffer, buffer.count, 65536) == buffer.count)
        #expect(buffer == [UInt8](repeating: 0, count: 4096), "an unflushed block is gone")
        #expect(try disk.status()["lost.blocks"] == "2")
    }

    /// `direct` too: on ext4 it takes the per-file fsyncs that powerfs checks against a model of the file
    /// system; here they meet the real one.
    @Test(arguments: ["journal", "direct"]) func powerCutsOnExt4LoseNothingAcknowledged(commit: String) async throws {
        let started = ContinuousClock.now
        let disk = try await BlockDisk.make(script: Self.blockfs)
        try await disk.withHosts { host in try await run(disk: disk, commit: commit, host: &host, started: started) }
    }

    private func run(disk: BlockDisk, commit: String, host: inout TestHost?, started: ContinuousClock.Instant) async throws {
        let cuts = Self.cuts
        var configuration = TestHost.Configuration(settings: [
            "http.enabled": "false",
            "smtp.commit": commit,
            "smtp.journal-size": "1048576",
            "smtp.domains": (["localhost"] + (0...cuts).map { "d\($0).test" }).joined(separator: ","),
        ])
        configuration.stateDirectory = URL(fileURLWithPath: try disk.makeDurableDirectory("state"))
        var audit = PowerLossAudit(mailRoot: disk.fileSystem + "/state/mail")
        var sent: [String: PowerLoad.Message] = [:]
        var fallbacks = 0
        var armed = 0
        var lostBlocks = 0
        for cycle in 0..<cuts {
            let instance = try await TestHost.start(configuration)
            host = instance
            if cycle == 0, commit == "journal" {
                // The point of this suite: the journal must have chosen the syncfs checkpoint here.
                let claimed = instance.log.split(separator: "\n").first { $0.contains("journal claimed") } ?? "none"
                try #require(claimed.contains("checkpoint=syncfs"), "the journal's log line: \(claimed)")
            }
            audit.scan(sent)
            // A third at random times; a third right after a flush (the journal's, a checkpoint's syncfs,
            // or ext4's own commit); a third in the middle of a write-back, blocks written and not flushed.
            let arm = [nil, "after flush \(Int.random(in: 1...40))", "after write \(Int.random(in: 1...150))"][cycle % 3]
            if arm != nil { armed += 1 }
            let cut = try await disk.cutUnderLoad(instance, cycle: cycle, arm: arm)
            if cut.fellBack { fallbacks += 1 }
            sent.merge(cut.messages) { $1 }
            await instance.stop()
            host = nil
            try await disk.powerOn()
            lostBlocks += Int(try disk.status()["lost.blocks"] ?? "") ?? 0
        }
        let final = try await TestHost.start(configuration)
        host = final
        audit.scan(sent)
        let status = try disk.status()
        let lost = audit.lostMessages(sent)
        let acknowledged = sent.values.filter(\.acknowledged)
        let elapsed = ContinuousClock.now - started
        print("""
            power loss (ext4 on blockfs, smtp.commit = \(commit)): \(status["cuts"] ?? "?") cuts \
            (\(armed) right after a flush or a write, \(fallbacks) of them fell back to a cut at a random time), \(lostBlocks) unflushed \
            blocks lost in all, \(sent.count) messages attempted, \(acknowledged.count) acknowledged \
            (\(acknowledged.reduce(0) { $0 + $1.recipients.count }) deliveries), \(audit.found) files found in new/, \
            lost \(lost.count) acknowledged messages (\(audit.missingDeliveries(sent)) deliveries), \
            duplicated \(audit.duplicates(sent).count), partial or foreign files in new/ \(audit.corrupt.count), \
            delivered without 250 \(audit.deliveredWithoutAcknowledgement(sent)), \(Int(elapsed.components.seconds)) s, \
            blockfs seed \(status["seed"] ?? "?")
            """ + (lost.isEmpty ? "" : "\nlost: \(lost.prefix(10))") + (audit.corrupt.isEmpty ? "" : "\ncorrupt: \(audit.corrupt.prefix(5))"))
        #expect(lost.count == 0, "acknowledged messages lost: \(lost.prefix(10))")
        #expect(audit.corrupt.count == 0, "partial or foreign files in new/: \(audit.corrupt.prefix(5))")
        #expect(audit.duplicates(sent).isEmpty, "messages twice in a Maildir: \(audit.duplicates(sent).prefix(5))")
        #expect(Int(status["cuts"] ?? "") == cuts)
        #expect(acknowledged.count >= cuts, "messages were acknowledged between cuts")
        #expect(fallbacks * 2 < max(armed, 1), "most armed cuts fired at their operation")
    }
}

/// blockfs mounted in a temporary folder, an ext4 made on its `disk` and mounted from it by a loop device.
final class BlockDisk: PowerControlled, @unchecked Sendable {
    let base: String
    /// Where blockfs is mounted (`disk`, `.powerloss`).
    let device: String
    /// Where the ext4 is mounted.
    let fileSystem: String
    private let process: Process
    var controlFile: String { device + "/.powerloss" }

    private init(base: String, process: Process) {
        self.base = base
        device = base + "/blockfs"
        fileSystem = base + "/ext4"
        self.process = process
    }

    /// 128 MiB: room for the journal, the Maildirs of the cuts and ext4's own journal.
    static let size = 128 << 20

    /// `keep`: the share of unflushed blocks that survive a cut; `withFileSystem`: make and mount the ext4.
    static func make(script: String, keep: Double = 0.5, withFileSystem: Bool = true) async throws -> BlockDisk {
        guard getuid() == 0, FileManager.default.fileExists(atPath: "/dev/fuse"), FileManager.default.fileExists(atPath: "/dev/loop-control")
        else { throw TestHostError("the block power-loss suite needs root, /dev/fuse and loop devices") }
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-blockloss-\(UUID().uuidString.prefix(8))").path
        let process = Process()
        let disk = BlockDisk(base: base, process: process)
        try FileManager.default.createDirectory(atPath: disk.device, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: disk.fileSystem, withIntermediateDirectories: true)
        process.executableURL = URL(fileURLWithPath: script)
        // It unmounts the ext4, then itself, if this process dies (or after 15 minutes whatever happens).
        process.arguments = [disk.device, "--size", "\(size)", "--keep", "\(keep)", "--inner", disk.fileSystem, "--watch-pid", "\(getpid())", "--lifetime", "900"]
        let log = base + "/blockfs.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: log)
        process.standardError = FileHandle(forWritingAtPath: log)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        do {
            _ = try await Deadline.eventually("blockfs to mount", timeout: .seconds(15)) { () -> Bool? in
                guard process.isRunning else { throw TestHostError("blockfs ended: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")") }
                return FileManager.default.fileExists(atPath: disk.device + "/.powerloss") ? true : nil
            }
            guard withFileSystem else { return disk }
            // 4 KiB blocks as on any disk of today's size (mkfs picks 1 KiB for a file this small).
            try disk.runCommand("/sbin/mkfs.ext4", ["-q", "-F", "-b", "4096", "-E", "nodiscard", disk.device + "/disk"])
            try disk.mountFileSystem()
        } catch {
            await disk.release()
            throw error
        }
        return disk
    }

    private func runCommand(_ executable: String, _ arguments: [String]) throws {
        let result = try CommandResult.run(executable, arguments)
        guard result.status == 0 else {
            throw TestHostError("\(executable) \(arguments.joined(separator: " ")): exit \(result.status): \(result.stdout)\(result.stderr)")
        }
    }

    /// `mount -o loop`: the loop device is released when the file system is unmounted.
    private func mountFileSystem() throws {
        try runCommand("/bin/mount", ["-t", "ext4", "-o", "loop", device + "/disk", fileSystem])
    }

    /// After a cut: unmounts the ext4 (its writes fail from the cut on), powers the disk on, mounts it again.
    /// The unmount is retried while the file system is busy: a process of the dead host (an SMTP worker
    /// ended by its parent's death) may still be closing its files there.
    func powerOn() async throws {
        let deadline = ContinuousClock.now + .seconds(15)
        while true {
            let result = try CommandResult.run("/bin/umount", [fileSystem])
            if result.status == 0 { break }
            guard ContinuousClock.now < deadline else {
                throw TestHostError("umount \(fileSystem): exit \(result.status): \(result.stdout)\(result.stderr)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        try command("on")
        try mountFileSystem()
    }

    /// Makes `name` at the root of the ext4, durably (mkdir, fsync of the root); returns its path.
    func makeDurableDirectory(_ name: String) throws -> String {
        let path = fileSystem + "/" + name
        guard mkdir(path, 0o755) == 0 else { throw TestHostError("mkdir \(path): \(String(cString: strerror(errno)))") }
        let fd = open(fileSystem, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        guard fd >= 0, fsync(fd) == 0 else { throw TestHostError("fsync \(fileSystem): \(String(cString: strerror(errno)))") }
        return path
    }

    /// Unmounts the ext4 and blockfs (lazily if need be), which ends blockfs, removes the folder.
    func release() async {
        for mountPoint in [fileSystem, device] {
            if (try? CommandResult.run("/bin/umount", [mountPoint]))?.status != 0 {
                _ = try? CommandResult.run("/bin/umount", ["-l", mountPoint])
            }
        }
        if process.isRunning {
            process.terminate()
            let process = self.process
            if (try? await Deadline.eventually("blockfs to end", timeout: .seconds(5)) { process.isRunning ? nil : true }) == nil {
                kill(process.processIdentifier, SIGKILL)
            }
        }
        try? FileManager.default.removeItem(atPath: base)
    }
}
