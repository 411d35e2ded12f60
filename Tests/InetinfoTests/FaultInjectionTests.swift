import Foundation
import HostControl
import InetinfoTestKit
import Testing

/// The host's fault injection (`inetinfoctl crash`), which lives in the host and reaches the supervisor
/// only through a running instance's handle.
@Suite struct FaultInjectionTests {
    @Test func slowStartMakesTheReplacementMissItsStartupTimeout() async throws {
        let settings = ["http.enabled": "false", "supervisor.startup-timeout": "300", "supervisor.backoff-max": "50"]
        try await TestHost.with(.init(mode: .inProcess, settings: settings)) { host in
            try host.inject(.slowStart, into: "smtp")
            let slow = try await host.waitForState("smtp", .backoff, instance: 2)
            #expect(slow.reason.hasPrefix("startup timeout: not ready after 300 ms"))
            // Only the next instance was slow: the one after it starts normally.
            try await host.waitForState("smtp", .running, instance: 3)
            #expect(try host.service("smtp").restarts == 2)
        }
    }

    @Test func faultsAreRefusedWhereTheyCannotApply() async throws {
        try await TestHost.with(.init(mode: .inProcess, settings: ["http.enabled": "false"])) { host in
            let refusals: [(ControlRequest, String)] = [
                (ControlRequest(command: .crash, service: "http", mode: "throw"), "http is not running (it is stopped)"),
                (ControlRequest(command: .crash, service: "smtp", mode: "melt"), "unknown crash mode 'melt' (use \(Fault.names))"),
                (ControlRequest(command: .crash, service: "host", mode: "throw"), "crash host supports --mode hang, trap, segv, abort or exit"),
                (ControlRequest(command: .crash, service: "nope", mode: "throw"), "no service named 'nope' (services: smtp, http)"),
            ]
            for (request, expected) in refusals {
                let reply = try host.client.send(request)
                #expect(!reply.ok && reply.error == expected, "\(request)")
            }
            #expect(try host.service("smtp").instance == 1, "no refused request touched the running service")
        }
    }
}
