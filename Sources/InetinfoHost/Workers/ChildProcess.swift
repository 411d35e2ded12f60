import CProcessControl
import Foundation
import Glibc
import Supervision

/// Starting, reaping and measuring child processes.
///
/// Contract: ``spawn(executable:arguments:descriptors:)`` starts a child with exactly the given
/// descriptors at 0, 1, 2 (inherited) and 3, 4, … (the ones passed), and nothing else; ``reap(_:)`` waits
/// for that one child, so every child the host starts is reaped and none is left a zombie.
enum ChildProcess {
    struct SpawnError: Error, CustomStringConvertible {
        var operation: String
        var errno: Int32
        var description: String { "\(operation): \(String(cString: strerror(errno)))" }
    }

    /// Spawns `executable` (shown as `name` in `ps`) with `descriptors` at 3, 4, …; standard input and
    /// output are inherited, standard error too unless `standardError` is given, and the environment with
    /// `environment` added where it does not say otherwise. Signals go back to their defaults and none is
    /// blocked in the child, which leads a process group of its own.
    static func spawn(executable: String, name: String, arguments: [String], descriptors: [Int32],
                      standardError: Int32? = nil, environment: [String: String] = [:]) throws(SpawnError) -> pid_t {
        // Every source is first duplicated above the targets, so that no `dup2` maps a descriptor onto
        // itself (which would leave it close-on-exec) or onto a source not yet moved.
        var staged: [Int32] = []
        defer { staged.forEach { Glibc.close($0) } }
        for descriptor in descriptors {
            let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 100)
            guard copy >= 0 else { throw SpawnError(operation: "dup", errno: errno) }
            staged.append(copy)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // First: its source may be one of the targets below.
        if let standardError {
            let result = posix_spawn_file_actions_adddup2(&actions, standardError, 2)
            guard result == 0 else { throw SpawnError(operation: "posix_spawn_file_actions_adddup2", errno: result) }
        }
        for (index, source) in staged.enumerated() {
            let result = posix_spawn_file_actions_adddup2(&actions, source, 3 + Int32(index))
            guard result == 0 else { throw SpawnError(operation: "posix_spawn_file_actions_adddup2", errno: result) }
        }

        // Nothing else is inherited, close-on-exec or not.
        let closing = inetinfo_spawn_close_from(&actions, 3 + Int32(staged.count))
        guard closing == 0 else { throw SpawnError(operation: "posix_spawn_file_actions_addclosefrom_np", errno: closing) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        // A process group of its own (named by its pid): the child and whatever it starts can be killed together.
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))

        let argv = ([name] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var variables = ProcessInfo.processInfo.environment
        // What systemd told the host is the host's alone: a child must not notify, ping or adopt for it.
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
            variables[name] = nil
        }
        variables.merge(environment) { inherited, _ in inherited }
        let envp = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else { throw SpawnError(operation: "posix_spawn \(executable)", errno: result) }
        return pid
    }

    /// Waits (blocking a thread of its own) until `pid` ends, and says how it ended.
    static func reap(_ pid: pid_t) async -> InstanceEnd {
        await withCheckedContinuation { continuation in
            let thread = Thread {
                var status: Int32 = 0
                while waitpid(pid, &status, 0) < 0 {
                    guard errno == EINTR else {
                        continuation.resume(returning: .exited(status: -1))
                        return
                    }
                }
                // <sys/wait.h>'s macros, which Swift does not import.
                let signal = status & 0x7F
                if signal == 0 {
                    continuation.resume(returning: .exited(status: (status >> 8) & 0xFF))
                } else {
                    continuation.resume(returning: .signaled(signal: signal))
                }
            }
            thread.stackSize = 64 * 1024
            thread.name = "reap \(pid)"
            thread.start()
        }
    }

    /// Resident memory and CPU time of a running process, from `/proc`; `nil` when it is gone.
    static func figures(of pid: pid_t) -> (rssBytes: Int64, cpuSeconds: Double)? {
        guard let statm = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8),
              let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        else { return nil }
        let pageSize = Int64(sysconf(Int32(_SC_PAGESIZE)))
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let pages = statm.split(separator: " ").dropFirst().first.flatMap { Int64($0) } ?? 0
        // The command name (field 2) may contain spaces; the fields after its closing parenthesis do not.
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // utime and stime are fields 14 and 15; `fields` starts at field 3.
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]), ticks > 0 else { return nil }
        return (pages.multipliedReportingOverflow(by: pageSize).partialValue, (user + system) / ticks)
    }

    /// Whether `pid` has a child whose command is `name` (any of its threads may have started it).
    static func hasChild(named name: String, of pid: pid_t) -> Bool {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        for task in tasks {
            guard let children = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8) else { continue }
            for child in children.split(separator: " ") {
                let command = try? String(contentsOfFile: "/proc/\(child)/comm", encoding: .utf8)
                if command?.trimmingCharacters(in: .whitespacesAndNewlines) == name { return true }
            }
        }
        return false
    }
}
