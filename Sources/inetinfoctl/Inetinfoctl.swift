import ArgumentParser
import Foundation
import HostControl

@main
struct Inetinfoctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inetinfoctl",
        abstract: "Inspect and steer a running inetinfo host.",
        discussion: "Every command takes --socket PATH (before or after the command): the host's control socket, by default $INETINFO_SOCKET, $RUNTIME_DIRECTORY/inetinfo.sock, or ./var/run/inetinfo.sock. Exit status: 0 success (status: every enabled service runs), 3 status: some service is not running, 1 error (a usage error too).",
        subcommands: [Status.self, Start.self, Stop.self, Restart.self, Crash.self, Events.self, Reload.self, Crashes.self,
                      Quarantine.self, Metrics.self])

    /// `inetinfoctl [--socket PATH] COMMAND …`: the socket may come before the command, as in the
    /// documented interface, so it is moved behind the command and its subcommands before parsing.
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        var leading: [String] = []
        while let first = arguments.first, first.hasPrefix("--socket") {
            leading.append(arguments.removeFirst())
            if first == "--socket", !arguments.isEmpty { leading.append(arguments.removeFirst()) }
        }
        // A misspelt command would otherwise be reported as "unknown option --socket" (moved behind it).
        let commands = configuration.subcommands.map { $0._commandName } + ["help"]
        if !leading.isEmpty, let first = arguments.first, !first.hasPrefix("-"), !commands.contains(first) {
            fail("unknown command '\(first)' (commands: \(commands.joined(separator: ", ")))")
        }
        arguments += leading
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
        } catch {
            // docs/control.md: 1 for any error, a usage error included (ArgumentParser's own status for those
            // is 64); help, --version and the commands' own statuses (status: 3) go through as they are.
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(1)
        }
    }
}

struct SocketOption: ParsableArguments {
    @Option(name: .long, help: "The host's control socket (default: $INETINFO_SOCKET, $RUNTIME_DIRECTORY/inetinfo.sock, ./var/run/inetinfo.sock).")
    var socket: String?

    var path: String {
        if let socket { return socket }
        let environment = ProcessInfo.processInfo.environment
        if let value = environment["INETINFO_SOCKET"], !value.isEmpty { return value }
        return ControlSocketPath.default(environment: environment)
    }

    func client(timeout: Int = 10) -> ControlClient { ControlClient(path: path, timeout: timeout) }
}

/// Sends a request whose reply is a message; prints it, or the error, and sets the exit status.
func perform(_ request: ControlRequest, socket: SocketOption) throws {
    if let message = ask(request, socket: socket).message { print(message) }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("inetinfoctl: \(message)\n".utf8))
    Foundation.exit(1)
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the host and its services (exit 3 when an enabled service is not running).")
    @OptionGroup var socket: SocketOption
    @Argument(help: "Only this service.") var service: String?
    @Flag(help: "Print the status as one JSON object.") var json = false
    @Flag(help: "Keep showing it: redrawn in place on a terminal (like top), one line per service and refresh otherwise. Ctrl-C ends it.")
    var watch = false
    @Option(help: "Seconds between refreshes of --watch (0.1 to 3600).") var interval: Double = 2

    func validate() throws {
        guard interval.isFinite, (0.1...3600).contains(interval) else { throw ValidationError("--interval must be between 0.1 and 3600 seconds") }
        guard !(watch && json) else { throw ValidationError("--watch and --json do not go together (use events --follow --json)") }
    }

    func run() throws {
        if watch { StatusWatch(socket: socket, service: service, interval: interval).run() }
        let reply: ControlReply
        do {
            reply = try socket.client().send(ControlRequest(command: .status, service: service))
        } catch {
            fail("\(error)")
        }
        guard reply.ok, let status = reply.status else { fail(reply.error ?? "the host sent no status") }
        if json {
            let data = try ControlJSON.encoder().encode(status)
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(StatusPresenter(colour: isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil).render(status), terminator: "")
        }
        if !status.allEnabledRunning { throw ExitCode(3) }
    }
}

struct Start: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Start a stopped or failed service.")
    @OptionGroup var socket: SocketOption
    @Argument var service: String
    func run() throws { try perform(ControlRequest(command: .start, service: service), socket: socket) }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop a service gracefully; it stays stopped.")
    @OptionGroup var socket: SocketOption
    @Argument var service: String
    func run() throws { try perform(ControlRequest(command: .stop, service: service), socket: socket) }
}

struct Restart: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop and start a service.")
    @OptionGroup var socket: SocketOption
    @Argument var service: String
    func run() throws { try perform(ControlRequest(command: .restart, service: service), socket: socket) }
}

struct Crash: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inject a failure (needs a host started with --enable-fault-injection).",
        discussion: "SERVICE is a service name, or `host` (modes hang and trap) to break the host itself.")
    @OptionGroup var socket: SocketOption
    @Argument var service: String
    @Option(help: ArgumentHelp("One of \(Fault.names) (see docs/control.md).")) var mode: String = Fault.throw.rawValue

    func validate() throws {
        guard Fault(rawValue: mode) != nil else { throw ValidationError("--mode must be one of \(Fault.names)") }
    }

    func run() throws { try perform(ControlRequest(command: .crash, service: service, mode: mode), socket: socket) }
}

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the supervisor's state changes.")
    @OptionGroup var socket: SocketOption
    @Flag(help: "Keep printing events as they happen.") var follow = false
    @Flag(help: "One JSON object per line.") var json = false
    @Option(help: ArgumentHelp("Only events of the last DURATION: 90s, 10m, 2h, 1d (a number alone is seconds).", valueName: "DURATION"))
    var since: String?

    func validate() throws {
        if let since, DurationText.seconds(since) == nil {
            throw ValidationError("--since '\(since)' is not a duration such as 30s, 10m, 2h or 1d")
        }
    }

    func run() throws {
        let encoder = ControlJSON.encoder()
        let earliest = since.flatMap(DurationText.seconds).map { Date().addingTimeInterval(-$0) }
        do {
            try socket.client(timeout: follow ? 0 : 10).exchange(ControlRequest(command: .events, follow: follow)) { reply in
                guard reply.ok, let event = reply.event else { fail(reply.error ?? "unexpected reply") }
                if let earliest, event.time < earliest { return true }
                if json {
                    print(String(decoding: try encoder.encode(event), as: UTF8.self))
                } else {
                    print(StatusPresenter.line(event))
                }
                fflush(nil)
                return true
            }
        } catch {
            fail("\(error)")
        }
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Re-read the configuration file and apply it.")
    @OptionGroup var socket: SocketOption
    func run() throws { try perform(ControlRequest(command: .reload), socket: socket) }
}

/// Sends a request and returns the reply, or exits with the error.
func ask(_ request: ControlRequest, socket: SocketOption) -> ControlReply {
    let reply: ControlReply
    do {
        reply = try socket.client().send(request)
    } catch {
        fail("\(error)")
    }
    guard reply.ok else { fail(reply.error ?? "the host refused the request") }
    return reply
}

func printJSON(_ value: some Encodable) throws {
    print(String(decoding: try ControlJSON.encoder().encode(value), as: UTF8.self))
}

struct Metrics: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the host's metrics in the Prometheus text format (what /metrics serves; the host keeps them when admin.listen is set).")
    @OptionGroup var socket: SocketOption
    func run() throws {
        print(ask(ControlRequest(command: .metrics), socket: socket).message ?? "", terminator: "")
    }
}

struct Crashes: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The crash records: what died, how, and the input that was being processed (docs/control.md).",
        subcommands: [List.self, Show.self, Export.self], defaultSubcommand: List.self)

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the crash records, oldest first.")
        @OptionGroup var socket: SocketOption
        @Flag(help: "One JSON object per line, newest last.") var json = false

        func run() throws {
            let crashes = ask(ControlRequest(command: .crashes), socket: socket).crashes ?? []
            if json {
                for crash in crashes { try printJSON(crash) }
            } else {
                print(CrashPresenter.list(crashes), terminator: "")
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one crash record: what died, how, the suspect and its last input.")
        @OptionGroup var socket: SocketOption
        @Argument var id: String
        @Flag(help: "The record as one JSON object (inputs in base64).") var json = false

        func run() throws {
            guard let record = ask(ControlRequest(command: .crashes, id: id), socket: socket).crash else { fail("the host sent no record") }
            if json {
                try printJSON(record)
            } else {
                print(CrashPresenter.show(record), terminator: "")
            }
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the raw input of a crashed connection (the suspect's by default): a replayable test case.",
            discussion: "Replay it with scripts/replay-input.sh FILE HOST:PORT, or InetinfoTestKit's TestHost.replay(_:to:).")
        @OptionGroup var socket: SocketOption
        @Argument var id: String
        @Option(help: "The connection's index in `crashes show` (default: the suspect).") var connection: Int?
        @Option(name: [.customShort("o"), .long], help: "Write here instead of standard output.") var output: String?

        func run() throws {
            guard let record = ask(ControlRequest(command: .crashes, id: id), socket: socket).crash else { fail("the host sent no record") }
            let chosen: CrashRecord.Connection
            if let connection {
                guard record.connections.indices.contains(connection) else {
                    fail("crash \(id) has \(record.connections.count) connections (0...\(max(0, record.connections.count - 1)))")
                }
                chosen = record.connections[connection]
            } else {
                guard let suspect = record.suspect else {
                    fail("crash \(id) has no suspect (no input was being processed); choose one with --connection")
                }
                chosen = suspect
            }
            if let output {
                // Mode 0600: the input may hold a password (AUTH) or mail. Not through a symbolic link.
                let fd = open(output, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
                guard fd >= 0 else { fail("cannot write \(output): \(String(cString: strerror(errno)))") }
                let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
                do {
                    try handle.write(contentsOf: chosen.lastInput)
                } catch {
                    fail("cannot write \(output): \(error)")
                }
            } else {
                // Raw bytes from a peer are not for a terminal (they may hold escape sequences).
                guard isatty(STDOUT_FILENO) == 0 else { fail("the input is raw bytes: redirect it, or use -o FILE (or crashes show to read it)") }
                FileHandle.standardOutput.write(chosen.lastInput)
            }
        }
    }
}

struct Quarantine: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Addresses refused at connect because their input kept crashing a service.",
        subcommands: [List.self, Release.self], defaultSubcommand: List.self)

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the quarantined addresses.")
        @OptionGroup var socket: SocketOption
        @Flag(help: "One JSON object per line.") var json = false

        func run() throws {
            let entries = ask(ControlRequest(command: .quarantine, action: "list"), socket: socket).quarantine ?? []
            if json {
                for entry in entries { try printJSON(entry) }
            } else {
                print(CrashPresenter.quarantine(entries), terminator: "")
            }
        }
    }

    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End an address's quarantine now.")
        @OptionGroup var socket: SocketOption
        @Argument var address: String
        func run() throws { try perform(ControlRequest(command: .quarantine, action: "release", address: address), socket: socket) }
    }
}
