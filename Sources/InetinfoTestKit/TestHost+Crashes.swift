import Foundation
import Glibc
import HostControl

/// Crash records and the quarantine, as tests read them; and the replay of a recorded input, which
/// turns a crash into a regression test in one step:
///
///     let input = try host.exportedInput(of: crash.id)          // or a file from `inetinfoctl crashes export`
///     let reply = try patched.replay(input, to: "smtp")
///     #expect(reply.contains("503 5.5.1"))
extension TestHost {
    /// Every crash record's summary, oldest first.
    public func crashes() throws -> [CrashSummary] {
        let reply = try client.send(ControlRequest(command: .crashes))
        guard reply.ok else { throw TestHostError(reply.error ?? "crashes refused") }
        return reply.crashes ?? []
    }

    /// One crash record in full.
    public func crash(_ id: String) throws -> CrashRecord {
        let reply = try client.send(ControlRequest(command: .crashes, id: id))
        guard reply.ok, let record = reply.crash else { throw TestHostError(reply.error ?? "no crash record \(id)") }
        return record
    }

    /// What `inetinfoctl crashes export ID` writes: the suspect's input, or connection `connection`'s.
    public func exportedInput(of id: String, connection: Int? = nil) throws -> Data {
        let record = try crash(id)
        if let connection {
            guard record.connections.indices.contains(connection) else { throw TestHostError("crash \(id) has no connection \(connection)") }
            return record.connections[connection].lastInput
        }
        guard let suspect = record.suspect else { throw TestHostError("crash \(id) has no suspect") }
        return suspect.lastInput
    }

    /// The addresses quarantined now.
    public func quarantine() throws -> [QuarantineEntry] {
        let reply = try client.send(ControlRequest(command: .quarantine, action: "list"))
        guard reply.ok else { throw TestHostError(reply.error ?? "quarantine refused") }
        return reply.quarantine ?? []
    }

    /// Ends an address's quarantine, as `inetinfoctl quarantine release ADDR` does.
    public func release(_ address: String) throws {
        let reply = try client.send(ControlRequest(command: .quarantine, action: "release", address: address))
        guard reply.ok else { throw TestHostError(reply.error ?? "release refused") }
    }

    /// Sends `input` to `service` in one write, from `source` if given, and returns everything the service
    /// answered until it closed the connection or stayed silent for `quiet`.
    public func replay(_ input: Data, to service: String, from source: String? = nil, quiet: Duration = .seconds(2)) throws -> String {
        try Self.replay(input, port: try port(of: service), from: source, quiet: quiet)
    }

    /// The same against any listener (a host started otherwise, another server).
    public static func replay(_ input: Data, port: Int, host: String = "127.0.0.1", from source: String? = nil,
                              quiet: Duration = .seconds(2)) throws -> String {
        let fd = try TCPTestSocket.connect(port: port, host: host, source: source)
        defer { close(fd) }
        var interval = timeval(tv_sec: Int(quiet.components.seconds), tv_usec: Int(quiet.components.attoseconds / 1_000_000_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        try input.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                // The service may close before reading everything (a refusal): what it said still counts.
                if written < 0 {
                    if errno == EINTR { continue }
                    if errno == EPIPE || errno == ECONNRESET { break }
                    throw TestHostError("send: \(String(cString: strerror(errno)))")
                }
                offset += written
            }
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            received += chunk[..<count]
        }
        return String(decoding: received, as: UTF8.self)
    }
}
