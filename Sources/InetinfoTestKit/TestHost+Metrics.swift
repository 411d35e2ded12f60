import Foundation
import HostControl

/// The host's admin listener, as a scraper and a prober see it (the host runs with `admin.listen`).
extension TestHost {
    /// The admin listener's port, from `status` (`host.admin`).
    public func adminPort() throws -> Int {
        guard let address = try status().host.admin, let port = Int(address.split(separator: ":").last ?? "") else {
            throw TestHostError("the host runs no admin listener (set admin.listen)")
        }
        return port
    }

    /// `GET path` on the admin listener.
    public func admin(_ path: String, timeoutSeconds: Int = 10) throws -> AdminResponse {
        try AdminResponse.get(port: try adminPort(), path: path, timeoutSeconds: timeoutSeconds)
    }

    /// `/metrics`, parsed.
    public func metrics() throws -> MetricSamples {
        let response = try admin("/metrics")
        guard response.status == 200 else { throw TestHostError("/metrics answered \(response.status): \(response.body)") }
        return MetricSamples(exposition: response.body)
    }
}

/// One answer of the admin listener.
public struct AdminResponse: Sendable {
    public var status: Int
    public var headers: [String: String]
    public var body: String

    /// An HTTP/1.1 GET with `Connection: close`, read to the end.
    public static func get(port: Int, path: String, timeoutSeconds: Int = 10) throws -> AdminResponse {
        let fd = try TCPTestSocket.connect(port: port, timeoutSeconds: timeoutSeconds)
        defer { close(fd) }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == request.count else {
            throw TestHostError("cannot send to the admin listener: \(String(cString: strerror(errno)))")
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count == 0 { break }
            guard count > 0 else { throw TestHostError("no complete answer from the admin listener on \(path)") }
            received += chunk[..<count]
        }
        let text = String(decoding: received, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw TestHostError("not an HTTP response: \(text.prefix(200))") }
        let head = text[..<split.lowerBound].components(separatedBy: "\r\n")
        guard let statusLine = head.first, let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") else {
            throw TestHostError("not an HTTP status line: \(head.first ?? "")")
        }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return AdminResponse(status: status, headers: headers, body: String(text[split.upperBound...]))
    }
}
