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
        let now = state.withLockedValue { state in
            state.subscribers.append(push)
            return Set(state.entries.keys)
        }
        push(now)
    }

    var addresses: Set<String> { state.withLockedValue { Set($0.entries.keys) } }

    /// A crash whose suspect came from `address`. Returns the new entry if it quarantined the address.
    @discardableResult
    func strike(_ address: String, crash: String, at now: Date = Date()) -> QuarantineEntry? {
        let (entry, push) = state.withLockedValue { state -> (QuarantineEntry?, (Set<String>, [@Sendable (Set<String>) -> Void])?) in
            let settings = state.settings
            guard settings.enabled, !settings.allow.contains(address), state.entries[address] == nil else { return (nil, nil) }
            let horizon = now.addingTimeInterval(-settings.window.seconds)
            var strikes = (state.strikes[address] ?? []).filter { $0.at > horizon }
            strikes.append((now, crash))
            guard strikes.count >= settings.after else {
                state.strikes[address] = strikes
                return (nil, nil)
            }
            state.strikes[address] = nil
            let entry = QuarantineEntry(address: address, since: now, until: now.addingTimeInterval(settings.time.seconds),
                                        crashes: strikes.map(\.crash))
            state.entries[address] = entry
            return (entry, (Set(state.entries.keys), state.subscribers))
        }
        if let entry {
            logger.warning("peer quarantined: its input crashed a service", metadata: [
                "address": "\(address)", "until": "\(ControlJSON.formatDate(entry.until))",
                "crashes": "\(entry.crashes.joined(separator: ","))",
            ])
        }
        if let (addresses, subscribers) = push { subscribers.forEach { $0(addresses) } }
        return entry
    }

    /// Ends a quarantine early; `false` if the address was not quarantined.
    func release(_ address: String) -> Bool {
        let push = state.withLockedValue { state -> (Set<String>, [@Sendable (Set<String>) -> Void])? in
            guard state.entries.removeValue(forKey: address) != nil else { return nil }
            state.strikes[address] = nil
            return (Set(state.entries.keys), state.subscribers)
        }
        guard let (addresses, subscribers) = push else { return false }
        logger.notice("peer released from quarantine", metadata: ["address": "\(address)", "by": "operator"])
        subscribers.forEach { $0(addresses) }
        return true
    }

    /// The quarantine now, oldest first.
    func entries() -> [QuarantineEntry] {
        state.withLockedValue { $0.entries.values.sorted { ($0.since, $0.address) < ($1.since, $1.address) } }
    }

    func update(settings: QuarantineSettings) {
        let push = state.withLockedValue { state -> (Set<String>, [@Sendable (Set<String>) -> Void])? in
            state.settings = settings
            // Turning the quarantine off, or allowing an address, ends its quarantine.
            let before = state.entries.count
            state.entries = state.entries.filter { settings.enabled && !settings.allow.contains($0.key) }
            return state.entries.count == before ? nil : (Set(state.entries.keys), state.subscribers)
        }
        if let (addresses, subscribers) = push { subscribers.forEach { $0(addresses) } }
    }

    /// Ends the quarantines that are due.
    func expire(at now: Date = Date()) {
        let (expired, push) = state.withLockedValue { state -> ([String], (Set<String>, [@Sendable (Set<String>) -> Void])?) in
            let expired = state.entries.values.filter { $0.until <= now }.map(\.address)
            guard !expired.isEmpty else { return ([], nil) }
            expired.forEach { state.entries.removeValue(forKey: $0) }
            return (expired, (Set(state.entries.keys), state.subscribers))
        }
        for address in expired {
            logger.notice("peer released from quarantine", metadata: ["address": "\(address)", "by": "expiry"])
        }
        if let (addresses, subscribers) = push { subscribers.forEach { $0(addresses) } }
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
