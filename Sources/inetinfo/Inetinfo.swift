import ArgumentParser
import Foundation
import InetinfoHost

@main
struct Inetinfo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inetinfo",
        abstract: "A supervised host for an SMTP and an HTTP service (see docs/configuration.md).",
        discussion: """
            Runs in the foreground. Without arguments: SMTP on 127.0.0.1:2525, HTTP on 127.0.0.1:8080, state \
            under ./var, control socket ./var/run/inetinfo.sock. Exit status: 0 after a clean stop, 1 when it \
            cannot start, 70 when a service escalated past its restart intensity, 78 for a bad configuration.
            """,
        version: InetinfoHost.version)

    @Option(name: .long, help: "A TOML configuration file.")
    var config: String?

    @Option(name: .customLong("smtp-listen"), help: "SMTP listen address, HOST:PORT (smtp.listen).")
    var smtpListen: String?

    @Option(name: .customLong("http-listen"), help: "HTTP listen address, HOST:PORT (http.listen).")
    var httpListen: String?

    @Option(name: .customLong("state-dir"), help: "State directory: mail, control socket (host.state-dir).")
    var stateDir: String?

    @Option(name: .customLong("web-root"), help: "Directory the HTTP service serves (http.web-root).")
    var webRoot: String?

    @Option(name: .customLong("control-socket"), help: "Path of the control socket (host.control-socket).")
    var controlSocket: String?

    @Option(name: .long, help: "isolated (one-for-one), shared (one-for-all) or process (one-for-one, each service in a worker process) (host.isolation).")
    var isolation: String?

    @Flag(name: .customLong("enable-fault-injection"), help: "Allow `inetinfoctl crash` (host.fault-injection).")
    var enableFaultInjection = false

    @Flag(name: .customLong("simulate-ms02-012"), help: "Replay the 2002 SMTP BDAT failure on purpose (smtp.simulate-ms02-012).")
    var simulateMS02012 = false

    @Option(name: .customLong("set"), help: ArgumentHelp("Set any configuration key, e.g. --set supervisor.max-restarts=5.", valueName: "KEY=VALUE"))
    var assignments: [String] = []

    @Flag(name: .customLong("check-config"), help: "Check the configuration and exit: 0 when it is valid, 78 (naming the key) when not. Opens no socket, writes nothing.")
    var checkConfig = false

    /// `inetinfo worker …` is how the host starts a worker process (`isolation = process`); it is not
    /// meant for people, so it stays out of the parsed interface.
    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "worker" {
            Foundation.exit(await InetinfoHost.runWorker(arguments: Array(arguments.dropFirst())))
        }
        await main(arguments)
    }

    func run() async throws {
        var options = HostOptions()
        options.configFile = config
        options.assignments = assignments
        let flags: [(String, String?, String)] = [
            ("smtp.listen", smtpListen, "--smtp-listen"), ("http.listen", httpListen, "--http-listen"),
            ("host.state-dir", stateDir, "--state-dir"), ("http.web-root", webRoot, "--web-root"),
            ("host.control-socket", controlSocket, "--control-socket"), ("host.isolation", isolation, "--isolation"),
            ("host.fault-injection", enableFaultInjection ? "true" : nil, "--enable-fault-injection"),
            ("smtp.simulate-ms02-012", simulateMS02012 ? "true" : nil, "--simulate-ms02-012"),
        ]
        options.flags = flags.compactMap { key, value, flag in value.map { (key, $0, flag) } }

        let configuration: HostConfiguration
        do {
            configuration = try InetinfoHost.configuration(options: options)
        } catch {
            FileHandle.standardError.write(Data("inetinfo: \(error)\n".utf8))
            throw ExitCode(InetinfoHost.ExitStatus.configuration.rawValue)
        }
        if checkConfig {
            print("inetinfo: configuration OK (\(config ?? "defaults"))")
            return
        }
        InetinfoHost.bootstrapLogging(level: configuration.logLevel)
        let status = await InetinfoHost.run(options: options, configuration: configuration)
        if status != .success { throw ExitCode(status.rawValue) }
    }
}
