import Logging
import Supervision
import Systemd

/// The listening sockets of the enabled services and of the admin listener: from systemd socket
/// activation when it passed any (matched by `FileDescriptorName=`), bound by the host otherwise.
///
/// The admin socket is optional under systemd: a passed socket named `admin` (`inetinfo-admin.socket`)
/// is used, else the host binds `admin.listen` if it is set.
struct HostSockets {
    /// The name systemd gives the admin listener's socket.
    static let adminName = "admin"

    var services: [String: [ListeningSocket]] = [:]
    var admin: ListeningSocket?

    func closeAll() {
        services.values.joined().forEach { $0.close() }
        admin?.close()
    }

    static func open(configuration: HostConfiguration, catalog: [ServiceEntry], logger: Logger) throws -> HostSockets {
        var opened = HostSockets()
        do {
            try opened.open(configuration: configuration, catalog: catalog, logger: logger)
        } catch {
            opened.closeAll()
            throw error
        }
        return opened
    }

    private mutating func open(configuration: HostConfiguration, catalog: [ServiceEntry], logger: Logger) throws {
        let passed = try ListenFileDescriptors.take()
        let enabled = catalog.filter { configuration.services[$0.name]?.enabled ?? false }.map(\.name)
        if !passed.isEmpty {
            for descriptor in passed where descriptor.name == Self.adminName {
                guard admin == nil else {
                    throw HostError.startup("systemd passed more than one socket named '\(Self.adminName)'")
                }
                admin = try ListeningSocket.adopt(name: descriptor.name, fd: descriptor.fd)
            }
            for descriptor in passed where descriptor.name != Self.adminName {
                guard enabled.contains(descriptor.name) else {
                    throw HostError.startup("systemd passed a socket named '\(descriptor.name)' (fd \(descriptor.fd)) but no enabled service has that name (enabled: \(enabled.joined(separator: ", ")))")
                }
                services[descriptor.name, default: []].append(try ListeningSocket.adopt(name: descriptor.name, fd: descriptor.fd))
            }
            for name in enabled where services[name] == nil {
                throw HostError.startup("service '\(name)' is enabled but systemd passed no socket named '\(name)' (add FileDescriptorName=\(name) to its socket unit, or disable it with --set \(name).enabled=false)")
            }
            logger.info("adopted sockets from systemd", metadata: ["sockets": "\(passed.map { "\($0.name)=fd\($0.fd)" })"])
        } else {
            do {
                for name in enabled {
                    for endpoint in configuration.services[name]!.listen {
                        services[name, default: []].append(try ListeningSocket.bind(name: name, endpoint: endpoint))
                    }
                }
            } catch {
                throw HostError.startup("\(error)")
            }
        }
        if admin == nil, let endpoint = configuration.adminListen {
            do {
                admin = try ListeningSocket.bind(name: Self.adminName, endpoint: endpoint)
            } catch {
                throw HostError.startup("admin listener: \(error)")
            }
        }
        // The same rule for a socket systemd passed as for admin.listen (checked with the configuration).
        if let admin, !configuration.adminAllowRemote, !AdminAddress.isLoopback(endpoint: admin.address) {
            throw ConfigurationError(key: "admin.listen", problem: "systemd passed an admin socket on \(admin.address), not a loopback address; set admin.allow-remote = true to serve metrics and probes to other machines", source: "socket activation")
        }
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
