import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers

/// The host's side of the workers' figures (process isolation): each worker counts into a
/// ``FigureFile`` the host created for it; the host reads the files (every second, at every scrape, and
/// once more when a worker has ended) and adds what grew since its last reading to its own metrics. So
/// `/metrics` is complete in every mode, nothing a worker counted is lost when it crashes, and the
/// counters never go backwards when a worker is replaced.
///
/// The file is written by a worker that may have crashed half-way or been subverted: only the families of
/// ``MetricCatalog`` that services count are taken, with exactly their label names, short label values, a
/// bounded number of series and increments that are not absurd; anything else is ignored.
final class WorkerFigures: Sendable {
    /// Label values at most this long, of letters, digits and `_.-` (a method, a status class).
    static let maximumLabelValueLength = 32
    /// Series per family taken from workers: the HTTP requests counter has 11 methods × 5 classes.
    static let maximumSeriesPerFamily = 64
    /// Histogram observations taken from one reading of one worker (each is replayed into the host's
    /// histogram): far more than a second of traffic on this machine.
    static let maximumObservations: UInt64 = 1_000_000
    /// A counter that grew more than this between two readings is not believed.
    static let maximumIncrement: UInt64 = 1 << 40

    private let factory: any MetricsFactory
    /// Where the figure files are (`<runtime-dir>/figures`).
    let directory: String
    private let logger: Logger

    private struct SeriesKey: Hashable {
        var name: String
        var labels: [String]
    }

    /// What the host has taken from one worker's file so far.
    private struct Worker {
        var path: String
        var counters: [SeriesKey: UInt64] = [:]
        var histograms: [SeriesKey: (counts: [UInt64], sums: [UInt64])] = [:]
        var levels: [SeriesKey: Double] = [:]
    }

    private struct State {
        var workers: [Int32: Worker] = [:]
        var counters: [SeriesKey: Counter] = [:]
        var timers: [SeriesKey: CoreMetrics.Timer] = [:]
        var meters: [SeriesKey: Meter] = [:]
        var seriesPerFamily: [String: Int] = [:]
    }

    // Guards the workers' readings and the metric objects made for their series; collections come from
    // the timer, scrapes and reapers.
    private let state = NIOLockedValueBox(State())

    init(factory: any MetricsFactory, directory: String, logger: Logger) {
        self.factory = factory
        self.directory = directory
        self.logger = logger
        // Files a host that died left behind: their counts belonged to that host's counters, which ended
        // with it (Prometheus sees the new host's counters start again, as after any restart).
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where name.hasSuffix(".figures") {
            unlink("\(directory)/\(name)")
        }
    }

    /// Creates the figure file of a new worker; returns its path for the worker's configuration, or `nil`
    /// (the worker then counts nothing) when it cannot be created.
    func create(for pid: Int32, service: String) -> String? {
        let path = "\(directory)/\(service).\(pid).figures"
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            try FigureFile.create(path: path, pid: pid)
        } catch {
            logger.warning("no figure file for a worker; its figures are not collected", metadata: [
                "pid": "\(pid)", "error": "\(error)",
            ])
            return nil
        }
        state.withLockedValue { $0.workers[pid] = Worker(path: path) }
        return path
    }

    /// Takes what every live worker counted since the last collection.
    func collect() {
        state.withLockedValue { state in
            for pid in Array(state.workers.keys) { Self.take(pid, in: &state, factory: factory) }
        }
    }

    /// A worker ended: what it counted last is taken, its gauges no longer count, and its file goes.
    func workerEnded(_ pid: Int32) {
        let path = state.withLockedValue { state -> String? in
            Self.take(pid, in: &state, factory: factory)
            guard let worker = state.workers.removeValue(forKey: pid) else { return nil }
            Self.updateSums(of: Set(worker.levels.keys), in: &state)
            return worker.path
        }
        if let path { unlink(path) }
    }

    private static func take(_ pid: Int32, in state: inout State, factory: any MetricsFactory) {
        guard let path = state.workers[pid]?.path, let series = FigureFile.read(path: path) else { return }
        absorb(series, from: pid, in: &state, factory: factory)
    }

    /// Takes series as if read from worker `pid`'s file (the fuzzer's way in; the host reads files).
    func absorb(_ series: [FigureFile.Series], from pid: Int32) {
        state.withLockedValue { state in
            if state.workers[pid] == nil { state.workers[pid] = Worker(path: "") }
            Self.absorb(series, from: pid, in: &state, factory: factory)
        }
    }

    /// Adds what a worker's series grew by since the last reading.
    private static func absorb(_ series: [FigureFile.Series], from pid: Int32, in state: inout State, factory: any MetricsFactory) {
        guard var worker = state.workers[pid] else { return }
        var levels: [SeriesKey: Double] = [:]
        var observations: UInt64 = 0
        // A worker's recorder gives each series one slot; a file that names one twice counts the first.
        var seen: Set<SeriesKey> = []
        for entry in series {
            guard let key = key(entry), seen.insert(key).inserted else { continue }
            switch entry.kind {
            case .counter:
                let last = worker.counters[key] ?? 0
                worker.counters[key] = entry.value
                guard entry.value > last, entry.value - last <= maximumIncrement,
                      let counter = metric(key, in: &state.counters, count: &state.seriesPerFamily, make: {
                          Counter(label: key.name, dimensions: dimensions(key), factory: factory)
                      })
                else { continue }
                counter.increment(by: Int64(entry.value - last))
            case .histogram:
                let zero = [UInt64](repeating: 0, count: FigureFile.buckets)
                let last = worker.histograms[key] ?? (zero, zero)
                worker.histograms[key] = (entry.counts, entry.sums)
                guard let timer = metric(key, in: &state.timers, count: &state.seriesPerFamily, make: {
                    CoreMetrics.Timer(label: key.name, dimensions: dimensions(key), factory: factory)
                }) else { continue }
                replay(counts: entry.counts, sums: entry.sums, since: last, into: timer, budget: &observations)
            case .gauge:
                let level = Double(bitPattern: entry.value)
                guard level.isFinite, abs(level) < 1e12,
                      metric(key, in: &state.meters, count: &state.seriesPerFamily, make: {
                          Meter(label: key.name, dimensions: dimensions(key), factory: factory)
                      }) != nil
                else { continue }
                levels[key] = level
            }
        }
        var touched = Set(levels.keys)
        touched.formUnion(worker.levels.keys)
        worker.levels = levels
        state.workers[pid] = worker
        updateSums(of: touched, in: &state)
    }

    /// Adds a histogram's new observations: each bucket's are replayed at their mean, kept inside the
    /// bucket, so the host's histogram gets the worker's bucket counts and count exactly, and its sum up to
    /// a mean that a torn reading put out of its bucket.
    private static func replay(counts: [UInt64], sums: [UInt64], since last: (counts: [UInt64], sums: [UInt64]),
                               into timer: CoreMetrics.Timer, budget observations: inout UInt64) {
        let bounds = [Int64(0)] + MetricCatalog.durationBuckets.map { Int64($0.components.seconds) * 1_000_000_000
            + $0.components.attoseconds / 1_000_000_000 }
        for bucket in 0..<FigureFile.buckets {
            guard counts[bucket] > last.counts[bucket] else { continue }
            let added = counts[bucket] - last.counts[bucket]
            guard added <= maximumObservations - observations else { return }
            observations += added
            let sum = sums[bucket] >= last.sums[bucket] ? sums[bucket] - last.sums[bucket] : 0
            var mean = Int64(clamping: sum / added)
            let lower = bounds[bucket] + (bucket == 0 ? 0 : 1)
            mean = max(mean, lower)
            if bucket + 1 < bounds.count { mean = min(mean, bounds[bucket + 1]) }
            for _ in 0..<added { timer.recordNanoseconds(mean) }
        }
    }

    private static func updateSums(of keys: Set<SeriesKey>, in state: inout State) {
        for key in keys {
            let sum = state.workers.values.reduce(0.0) { $0 + ($1.levels[key] ?? 0) }
            state.meters[key]?.set(sum)
        }
    }

    /// The series a worker names, if the catalog has it as a service's metric of this kind with exactly
    /// these label names and the values are plain words.
    private static func key(_ series: FigureFile.Series) -> SeriesKey? {
        let kind: MetricCatalog.Kind = switch series.kind {
        case .counter: .counter
        case .gauge: .gauge
        case .histogram: .histogram
        }
        guard let metric = MetricCatalog.byName[series.name], metric.fromServices, metric.kind == kind,
              series.labels.count == metric.labels.count
        else { return nil }
        var values: [String] = []
        for label in metric.labels {
            guard let value = series.labels[label], !value.isEmpty, value.utf8.count <= maximumLabelValueLength,
                  value.utf8.allSatisfy({ byte in
                      (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                          || byte == 0x5F || byte == 0x2E || byte == 0x2D
                  })
            else { return nil }
            values.append(value)
        }
        return SeriesKey(name: series.name, labels: values)
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

/// Entry points for the figure-file fuzzer (Fuzz/figure-file-fuzzer); not API.
@_spi(Fuzzing) public enum FigureFileFuzzing {
    public static let fileSize = FigureFile.size

    /// What the host does with a worker's figure file, from its bytes (zero-padded to the file's size):
    /// parse it, add it to a registry twice (the second reading adds nothing), expose the registry. Only
    /// the catalog's families may come out of it.
    public static func check(_ bytes: [UInt8]) {
        var file = Array(bytes.prefix(FigureFile.size))
        file += [UInt8](repeating: 0, count: FigureFile.size - file.count)
        guard let series = FigureFile.parse(file) else { return }
        let metrics = HostMetrics(isolation: .process, figures: "/nonexistent", logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
        guard let workers = metrics.workers else { return }
        workers.absorb(series, from: 1)
        let once = metrics.registry.emitToString()
        workers.absorb(series, from: 1)
        precondition(metrics.registry.emitToString() == once, "a second reading of the same file changed the figures")
        for line in once.split(separator: "\n") where !line.hasPrefix("#") {
            let name = line.prefix { $0 != "{" && $0 != " " }
            let family = MetricCatalog.all.contains { name == $0.name || name.hasPrefix($0.name + "_") }
            precondition(family, "a series outside the catalog: \(line)")
        }
    }
}
