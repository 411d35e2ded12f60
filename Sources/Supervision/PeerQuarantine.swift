import NIOConcurrencyHelpers
import NIOCore

/// The peer addresses an instance refuses at connect (the host's quarantine, as the instance sees it).
///
/// The host decides who is in it; every instance of every service consults it once per accepted
/// connection. A worker process holds its own copy, replaced whenever the host's changes.
public final class PeerQuarantine: Sendable {
    // Guards the set: replaced by the host (or a worker's control channel), read on every accept.
    private let addresses = NIOLockedValueBox<Set<String>>([])

    public init(_ addresses: Set<String> = []) {
        self.addresses.withLockedValue { $0 = addresses }
    }

    public func replace(with addresses: Set<String>) {
        self.addresses.withLockedValue { $0 = addresses }
    }

    /// Whether a connection from `address` (its IP address alone, as `SocketAddress.ipAddress` gives it)
    /// is refused.
    public func refuses(_ address: String) -> Bool {
        addresses.withLockedValue { $0.contains(address) }
    }
}
