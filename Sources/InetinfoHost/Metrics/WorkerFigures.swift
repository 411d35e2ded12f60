import CoreMetrics
import NIOConcurrencyHelpers

/// The host's side of the workers' figures (process isolation): what each worker reports
/// (``ServiceFigures``) is added to the host's own metrics, so `/metrics` is complete in every mode and its
/// counters never go backwards when a worker is replaced.
///
/// A worker is the host's own binary, but one that crashed half-way or was subverted: only the families of
/// ``MetricCatalog`` that services count are taken, with exactly their label names, short label values, a
/// bounded number of series and increments that are not absurd; anything else in a report is dropped.
final class WorkerFigures: Sendable {
    /// Label values at most this long, of letters, digits and `_.-` (a method, a status class).
    static let maximumLabelValueLength = 32
    /// Series per family taken from workers: the HTTP requests counter has 11 methods × 5 classes.
    static let maximumSeriesPerFamily = 64
    /// Histogram observations taken from one report (each is replayed into the host's histogram, on the
    /// workers' channel loop): far more than a second of traffic on this machine; a report beyond it is
    /// taken only up to it.
    static let maximumObservations: Int64 = 1_000_000

    private let factory: any MetricsFactory

    private struct SeriesKey: Hashable {
        var name: String
        var labels: [String]
    }

    private struct State {
        var counters: [SeriesKey: Counter] = [:]
        var timers: [SeriesKey: Timer] = [:]
        var meters: [SeriesKey: Meter] = [:]
        /// Each live worker's gauges; the host's gauge is their sum.
        var levels: [Int32: [SeriesKey: Double]] = [:]
        var seriesPerFamily: [String: Int] = [:]
        /// Asks every live worker of a service for its figures; one per worker runner.
        var collectors: [@Sendable (Duration) async -> Void] = []
    }

    // Guards the metric objects made for worker series, the workers' gauges and the collectors.
    private let state = NIOLockedValueBox(State())

    init(factory: any MetricsFactory) {
        self.factory = factory
    }

    func addCollector(_ collect: @escaping @Sendable (Duration) async -> Void) {
        state.withLockedValue { $0.collectors.append(collect) }
    }

    /// Asks every live worker for its figures and returns once all answered, or after `timeout`.
    func collect(within timeout: Duration) async {
        let collectors = state.withLockedValue { $0.collectors }
        await withTaskGroup(of: Void.self) { group in
            for collect in collectors { group.addTask { await collect(timeout) } }
        }
    }

    /// Adds a worker's report to the host's metrics.
    func apply(_ figures: ServiceFigures, from pid: Int32) {
        state.withLockedValue { state in
            for count in figures.counts {
                guard count.increment > 0, count.increment < Int64(1) << 40,
                      let key = Self.key(count.name, count.labels, kind: .counter),
                      let counter = Self.metric(key, in: &state.counters, count: &state.seriesPerFamily, make: {
                          Counter(label: key.name, dimensions: Self.dimensions(key), factory: factory)
                      })
                else { continue }
                counter.increment(by: count.increment)
            }
            var observations: Int64 = 0
            for spread in figures.spreads {
                let buckets = MetricCatalog.durationBuckets.count + 1
                guard spread.counts.count == buckets, spread.sumsNanoseconds.count == buckets,
                      spread.counts.allSatisfy({ $0 >= 0 && $0 <= Self.maximumObservations }),
                      spread.sumsNanoseconds.allSatisfy({ $0 >= 0 }),
                      case let total = spread.counts.reduce(0, +), total <= Self.maximumObservations - observations,
                      let key = Self.key(spread.name, spread.labels, kind: .histogram),
                      let timer = Self.metric(key, in: &state.timers, count: &state.seriesPerFamily, make: {
                          Timer(label: key.name, dimensions: Self.dimensions(key), factory: factory)
                      })
                else { continue }
                observations += total
                // Each bucket's observations are replayed at their mean, which lies in the same bucket:
                // the host's histogram gets the worker's bucket counts, count and sum exactly.
                for (count, sum) in zip(spread.counts, spread.sumsNanoseconds) where count > 0 {
                    let mean = sum / count
                    for _ in 0..<count { timer.recordNanoseconds(mean) }
                }
            }
            var levels: [SeriesKey: Double] = [:]
            for level in figures.levels where level.value.isFinite && abs(level.value) < 1e12 {
                guard let key = Self.key(level.name, level.labels, kind: .gauge),
                      Self.metric(key, in: &state.meters, count: &state.seriesPerFamily, make: {
                          Meter(label: key.name, dimensions: Self.dimensions(key), factory: factory)
                      }) != nil
                else { continue }
                levels[key] = level.value
            }
            var touched = Set(levels.keys)
            if let previous = state.levels[pid] { touched.formUnion(previous.keys) }
            state.levels[pid] = levels
            Self.updateSums(of: touched, in: &state)
        }
    }

    /// A worker ended: its gauges no longer count (its connections are gone with it).
    func workerEnded(_ pid: Int32) {
        state.withLockedValue { state in
            guard let levels = state.levels.removeValue(forKey: pid) else { return }
            Self.updateSums(of: Set(levels.keys), in: &state)
        }
    }

    private static func updateSums(of keys: Set<SeriesKey>, in state: inout State) {
        for key in keys {
            let sum = state.levels.values.reduce(0.0) { $0 + ($1[key] ?? 0) }
            state.meters[key]?.set(sum)
        }
    }

    /// The series a worker names, if the catalog has it as a service's metric of this kind with exactly
    /// these label names and the values are plain words.
    private static func key(_ name: String, _ labels: [String: String], kind: MetricCatalog.Kind) -> SeriesKey? {
        guard let metric = MetricCatalog.byName[name], metric.fromServices, metric.kind == kind,
              labels.count == metric.labels.count
        else { return nil }
        var values: [String] = []
        for label in metric.labels {
            guard let value = labels[label], !value.isEmpty, value.utf8.count <= maximumLabelValueLength,
                  value.utf8.allSatisfy({ byte in
                      (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                          || byte == 0x5F || byte == 0x2E || byte == 0x2D
                  })
            else { return nil }
            values.append(value)
        }
        return SeriesKey(name: name, labels: values)
    }

    private static func dimensions(_ key: SeriesKey) -> [(String, String)] {
        Array(zip(MetricCatalog.byName[key.name]?.labels ?? [], key.labels))
    }

    /// The metric object of a series, made the first time unless its family already has as many series as
    /// a worker may make.
    private static func metric<Metric>(_ key: SeriesKey, in table: inout [SeriesKey: Metric], count: inout [String: Int],
                                       make: () -> Metric) -> Metric? {
        if let existing = table[key] { return existing }
        guard count[key.name, default: 0] < maximumSeriesPerFamily else { return nil }
        count[key.name, default: 0] += 1
        let made = make()
        table[key] = made
        return made
    }
}
