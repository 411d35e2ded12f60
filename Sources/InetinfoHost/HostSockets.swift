import Logging
import Supervision
import Systemd

/// The listening sockets of the enabled services: from systemd socket activation when it passed
/// any (matched by `FileDescriptorName=`), bound by the host otherwise.
enum HostSockets {
    static func open(configuration: HostConfiguration, catalog: [ServiceEntry], logger: Logger) throws -> [String: [ListeningSocket]] {
        let passed = try ListenFileDescriptors.take()
        var sockets: [String: [ListeningSocket]] = [:]
        let enabled = catalog.filter { configuration.services[$0.name]?.enabled ?? false }.map(\.name)
        if !passed.isEmpty {
            for descriptor in passed {
                guard enabled.contains(descriptor.name) else {
                    throw HostError.startup("systemd passed a socket named '\(descriptor.name)' (fd \(descriptor.fd)) but no enabled service has that name (enabled: \(enabled.joined(separator: ", ")))")
                }
                sockets[descriptor.name, default: []].append(try ListeningSocket.adopt(name: descriptor.name, fd: descriptor.fd))
            }
            for name in enabled where sockets[name] == nil {
                throw HostError.startup("service '\(name)' is enabled but systemd passed no socket named '\(name)' (add FileDescriptorName=\(name) to its socket unit, or disable it with --set \(name).enabled=false)")
            }
            logger.info("adopted sockets from systemd", metadata: ["sockets": "\(passed.map { "\($0.name)=fd\($0.fd)" })"])
            return sockets
        }
        do {
            for name in enabled {
                for endpoint in configuration.services[name]!.listen {
                    sockets[name, default: []].append(try ListeningSocket.bind(name: name, endpoint: endpoint))
                }
            }
        } catch {
            sockets.values.joined().forEach { $0.close() }
            throw HostError.startup("\(error)")
        }
        return sockets
    }
}

/// Why the host could not start or had to stop.
public enum HostError: Error, CustomStringConvertible, Sendable {
    case startup(String)

    public var description: String {
        switch self {
        case .startup(let text): return text
        }
    }
}
