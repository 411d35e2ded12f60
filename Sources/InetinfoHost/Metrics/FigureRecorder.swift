import CoreMetrics
import NIOConcurrencyHelpers
import Synchronization

/// The metrics backend of a worker process: keeps what the instance counts (through swift-metrics) until
/// the host collects it over the control channel (``ServiceFigures``). Recording is an atomic add, or one
/// short lock for a histogram entry; collecting takes the increments since the last collection.
final class FigureRecorder: MetricsFactory {
    private struct Key: Hashable {
        var name: String
        var labels: [String: String]

        init(_ name: String, _ dimensions: [(String, String)]) {
            self.name = name
            labels = Dictionary(dimensions, uniquingKeysWith: { first, _ in first })
        }
    }

    private struct State {
        var counters: [Key: CountingHandler] = [:]
        var meters: [Key: LevelHandler] = [:]
        var timers: [Key: SpreadHandler] = [:]
    }

    // Guards the tables of handlers: instances make their metrics once, the collection walks them.
    private let state = NIOLockedValueBox(State())

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        state.withLockedValue { state in
            let key = Key(label, dimensions)
            if let existing = state.counters[key] { return existing }
            let handler = CountingHandler()
            state.counters[key] = handler
            return handler
        }
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        state.withLockedValue { state in
            let key = Key(label, dimensions)
            if let existing = state.meters[key] { return existing }
            let handler = LevelHandler()
            state.meters[key] = handler
            return handler
        }
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        state.withLockedValue { state in
            let key = Key(label, dimensions)
            if let existing = state.timers[key] { return existing }
            let handler = SpreadHandler()
            state.timers[key] = handler
            return handler
        }
    }

    // The services use counters, meters and timers only; the rest are kept nowhere.
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        NOOPMetricsHandler.instance.makeFloatingPointCounter(label: label, dimensions: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        NOOPMetricsHandler.instance.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }

    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyMeter(_ handler: any MeterHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}

    /// Everything counted since the last call (meters: their values now).
    func collect() -> ServiceFigures {
        let (counters, meters, timers) = state.withLockedValue { ($0.counters, $0.meters, $0.timers) }
        var figures = ServiceFigures()
        for (key, handler) in counters {
            let increment = handler.take()
            if increment > 0 { figures.counts.append(.init(name: key.name, labels: key.labels, increment: increment)) }
        }
        for (key, handler) in meters {
            figures.levels.append(.init(name: key.name, labels: key.labels, value: handler.level))
        }
        for (key, handler) in timers {
            let (counts, sums) = handler.take()
            if counts.contains(where: { $0 > 0 }) {
                figures.spreads.append(.init(name: key.name, labels: key.labels, counts: counts, sumsNanoseconds: sums))
            }
        }
        return figures
    }
}

private final class CountingHandler: CounterHandler, Sendable {
    private let value = Atomic<Int64>(0)

    func increment(by amount: Int64) {
        guard amount > 0 else { return }
        value.add(amount, ordering: .relaxed)
    }

    func reset() {}

    /// The increments since the last call.
    func take() -> Int64 { value.exchange(0, ordering: .relaxed) }
}

private final class LevelHandler: MeterHandler, Sendable {
    // Guards the level, set and moved from every event loop of the instance.
    private let value = NIOLockedValueBox(0.0)

    func set(_ value: Int64) { self.value.withLockedValue { $0 = Double(value) } }
    func set(_ value: Double) { self.value.withLockedValue { $0 = value.isFinite ? value : 0 } }
    func increment(by amount: Double) { value.withLockedValue { $0 += amount.isFinite ? amount : 0 } }
    func decrement(by amount: Double) { value.withLockedValue { $0 -= amount.isFinite ? amount : 0 } }

    var level: Double { value.withLockedValue { $0 } }
}

private final class SpreadHandler: TimerHandler, Sendable {
    /// Upper bounds of the buckets, in nanoseconds; one more bucket holds everything beyond the last.
    private static let bounds: [Int64] = MetricCatalog.durationBuckets.map {
        let (seconds, attoseconds) = $0.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    private struct Spread {
        var counts = [Int64](repeating: 0, count: SpreadHandler.bounds.count + 1)
        var sums = [Int64](repeating: 0, count: SpreadHandler.bounds.count + 1)
    }

    // Guards the buckets, recorded into from every event loop of the instance.
    private let spread = NIOLockedValueBox(Spread())

    func recordNanoseconds(_ duration: Int64) {
        let duration = max(duration, 0)
        let bucket = Self.bounds.firstIndex { duration <= $0 } ?? Self.bounds.count
        spread.withLockedValue { spread in
            spread.counts[bucket] += 1
            // A sum that would overflow (292 years of observations) stops growing.
            let (sum, overflow) = spread.sums[bucket].addingReportingOverflow(duration)
            if !overflow { spread.sums[bucket] = sum }
        }
    }

    func take() -> (counts: [Int64], sums: [Int64]) {
        spread.withLockedValue { spread in
            defer { spread = Spread() }
            return (spread.counts, spread.sums)
        }
    }
}
