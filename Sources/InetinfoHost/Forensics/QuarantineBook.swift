import Foundation
import HostControl
import Logging
import NIOConcurrencyHelpers
import ServiceLifecycle
import Supervision

/// The quarantine's settings (`supervisor.quarantine*`, docs/configuration.md).
public struct QuarantineSettings: Sendable, Equatable {
    public var enabled = true
    /// Crashes with the same suspect address, within ``window``, that quarantine it.
    public var after = 2
    public var window = Duration.seconds(600)
    /// How long a quarantine lasts.
    public var time = Duration.seconds(3600)
    /// Addresses never quarantined.
    public var allow: Set<String> = []

    public init() {}
}

/// Who is refused at connect, and why: the host's side of the quarantine.
///
/// Contract: every crash record whose suspect is an address (not allowed, quarantine enabled) is a strike
/// against it; ``QuarantineSettings/after`` strikes within the window quarantine it until `time` later.
/// Every change (a new entry, an expiry, a release) is pushed at once to every subscriber — the in-process
/// instances' ``PeerQuarantine`` and each worker runner — so that every service refuses the same peers.
/// It lives in the host: restarting a service does not clear it. Runs as a service of the host's group to
/// expire entries.
final class QuarantineBook: Service, Sendable {
    private struct State {
        var settings: QuarantineSettings
        var strikes: [String: [(at: Date, crash: String)]] = [:]
        var entries: [String: QuarantineEntry] = [:]
        var subscribers: [@Sendable (Set<String>) -> Void] = []
    }

    // Guards the strikes, the entries and the subscribers: written by crash records (tasks), the control
    // socket and the expiry loop.
    private let state: NIOLockedValueBox<State>
    private let logger: Logger

    init(settings: QuarantineSettings, logger: Logger) {
        state = NIOLockedValueBox(State(settings: settings))
        self.logger = logger
    }

    /// `push` gets the set of refused addresses now, then after every change.
    func subscribe(_ push: @escaping @Sendable (Set<String>) -> Void) {
        state.withLockedValue { state in
            state.subscribers.append(push)
            push(Set(state.entries.keys))
        }
    }

    /// A crash whose suspect came from `address`. Returns the new entry if it quarantined the address.
    @discardableResult
    func strike(_ address: String, crash: String, at now: Date = Date()) -> QuarantineEntry? {
        let entry = state.withLockedValue { state -> QuarantineEntry? in
            let settings = state.settings
            guard settings.enabled, !settings.allow.contains(address), state.entries[address] == nil else { return nil }
            let horizon = now.addingTimeInterval(-settings.window.seconds)
            var strikes = (state.strikes[address] ?? []).filter { $0.at > horizon }
            strikes.append((now, crash))
            guard strikes.count >= settings.after else {
                state.strikes[address] = strikes
                return nil
            }
            state.strikes[address] = nil
            let entry = QuarantineEntry(address: address, since: now, until: now.addingTimeInterval(settings.time.seconds),
                                        crashes: strikes.map(\.crash))
            state.entries[address] = entry
            Self.push(state)
            return entry
        }
        if let entry {
            logger.warning("peer quarantined: its input crashed a service", metadata: [
                "address": "\(address)", "until": "\(ControlJSON.formatDate(entry.until))",
                "crashes": "\(entry.crashes.joined(separator: ","))",
            ])
        }
        return entry
    }

    /// Pushes the refused addresses to every subscriber, under the lock: changes arrive in the order they
    /// were made. Subscribers only store the set or queue a message; none calls back into the book.
    private static func push(_ state: State) {
        let addresses = Set(state.entries.keys)
        state.subscribers.forEach { $0(addresses) }
    }

    /// Ends a quarantine early; `false` if the address was not quarantined.
    func release(_ address: String) -> Bool {
        let released = state.withLockedValue { state -> Bool in
            guard state.entries.removeValue(forKey: address) != nil else { return false }
            state.strikes[address] = nil
            Self.push(state)
            return true
        }
        guard released else { return false }
        logger.notice("peer released from quarantine", metadata: ["address": "\(address)", "by": "operator"])
        return true
    }

    /// The quarantine now, oldest first.
    func entries() -> [QuarantineEntry] {
        state.withLockedValue { $0.entries.values.sorted { ($0.since, $0.address) < ($1.since, $1.address) } }
    }

    func update(settings: QuarantineSettings) {
        state.withLockedValue { state in
            state.settings = settings
            // Turning the quarantine off, or allowing an address, ends its quarantine.
            let before = state.entries.count
            state.entries = state.entries.filter { settings.enabled && !settings.allow.contains($0.key) }
            if state.entries.count != before { Self.push(state) }
        }
    }

    /// Ends the quarantines that are due.
    func expire(at now: Date = Date()) {
        let expired = state.withLockedValue { state -> [String] in
            let expired = state.entries.values.filter { $0.until <= now }.map(\.address)
            guard !expired.isEmpty else { return [] }
            expired.forEach { state.entries.removeValue(forKey: $0) }
            Self.push(state)
            return expired
        }
        for address in expired {
            logger.notice("peer released from quarantine", metadata: ["address": "\(address)", "by": "expiry"])
        }
    }

    func run() async throws {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: .milliseconds(250))
            } catch {
                return
            }
            expire()
            if Task.isShuttingDownGracefully { return }
        }
    }
}

extension Duration {
    /// The duration in seconds, as a `TimeInterval`.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
