import CoreMetrics
import Foundation
import HostControl
import Logging
import NIOConcurrencyHelpers

/// The host's side of the workers' figures (process isolation): each worker counts into a
/// ``FigureFile`` the host created for it; the host reads the files (every second, at scrapes, and once
/// more when a worker has ended) and adds what grew since its last reading to its own metrics. So
/// `/metrics` is complete in every mode, nothing a worker counted is lost when it crashes, and the
/// counters never go backwards when a worker is replaced.
///
/// The file is written by a worker that may have crashed half-way or been subverted: only the families of
/// ``MetricCatalog`` that services count are taken, with exactly their label names and values; counts only
/// grow; a reading replays a bounded number of observations (the rest waits for the next) at durations
/// kept inside their bucket; anything else is ignored. The metrics are updated outside the lock, so a
/// reaper or a worker's spawn never waits for a replay.
final class WorkerFigures: Sendable {
    /// Histogram observations replayed into the host's histograms per worker: at most this many at once,
    /// and this many per second after that; the rest waits for later readings (scrapes may come at any
    /// rate, a subverted worker may claim any count). A second of the busiest traffic measured here is
    /// about 35,000.
    static let replayBudget: UInt64 = 100_000
    /// A counter that grew more than this between two readings is not believed.
    static let maximumIncrement: UInt64 = 1 << 40
    /// The longest duration replayed (observations beyond the last bucket, 10 s, are replayed as at most this).
    static let longestObservation: Int64 = 600_000_000_000
    /// What a histogram's sum may reach, in nanoseconds (about 146 years): beyond it a series takes no more
    /// observations, so that its sum stays far from what the exposition can render.
    static let maximumSum: UInt64 = 1 << 62

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
        /// Observations this worker may still have replayed now (``replayBudget``), and when that was so.
        var allowance = WorkerFigures.replayBudget
        var allowanceAt = ContinuousClock.now
        var counters: [SeriesKey: UInt64] = [:]
        var histograms: [SeriesKey: (counts: [UInt64], sums: [UInt64])] = [:]
        var levels: [SeriesKey: Double] = [:]
    }

    /// What a reading adds to the host's metrics, applied once the lock is released.
    private enum Intake {
        case count(Counter, Int64)
        case observe(CoreMetrics.Timer, nanoseconds: Int64, times: UInt64)
        case level(Meter, Double)
    }

    private struct State {
        /// By figure file path (unique per spawn: a pid may come again).
        var workers: [String: Worker] = [:]
        var counters: [SeriesKey: Counter] = [:]
        var timers: [SeriesKey: CoreMetrics.Timer] = [:]
        var meters: [SeriesKey: Meter] = [:]
        /// Nanoseconds replayed into each histogram so far (``maximumSum``).
        var replayed: [SeriesKey: UInt64] = [:]
        var nextFile = 0
    }

    // Guards the workers' readings, the metric objects made for their series and the replayed sums;
    // readings come from the timer, scrapes and reapers, creations from spawns.
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

    /// Creates the figure file of a new worker; returns its path for the worker's configuration (and for
    /// ``workerEnded(_:)``), or `nil` (the worker then counts nothing) when it cannot be created.
    func create(for pid: Int32, service: String) -> String? {
        let sequence = state.withLockedValue { state -> Int in
            defer { state.nextFile += 1 }
            return state.nextFile
        }
        let path = "\(directory)/\(service).\(pid).\(sequence).figures"
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
        state.withLockedValue { $0.workers[path] = Worker() }
        return path
    }

    /// Takes what every live worker counted since the last reading.
    func collect() {
        let intake = state.withLockedValue { state -> [Intake] in
            var intake: [Intake] = []
            for path in Array(state.workers.keys) {
                guard let series = FigureFile.read(path: path) else { continue }
                intake += Self.absorb(series, from: path, in: &state, factory: factory)
            }
            return intake + Self.levels(in: &state, factory: factory)
        }
        Self.apply(intake)
    }

    /// A worker ended: what it counted last is taken, its gauges no longer count, and its file goes.
    func workerEnded(_ path: String) {
        let intake = state.withLockedValue { state -> [Intake] in
            var intake: [Intake] = []
            if let series = FigureFile.read(path: path) {
                intake = Self.absorb(series, from: path, in: &state, factory: factory)
            }
            state.workers.removeValue(forKey: path)
            return intake + Self.levels(in: &state, factory: factory)
        }
        unlink(path)
        Self.apply(intake)
    }

    /// Takes series as if read from the file at `path` (the fuzzer's way in; the host reads files).
    func absorb(_ series: [FigureFile.Series], from path: String) {
        let intake = state.withLockedValue { state -> [Intake] in
            if state.workers[path] == nil { state.workers[path] = Worker() }
            return Self.absorb(series, from: path, in: &state, factory: factory) + Self.levels(in: &state, factory: factory)
        }
        Self.apply(intake)
    }

    private static func apply(_ intake: [Intake]) {
        for item in intake {
            switch item {
            case .count(let counter, let increment): counter.increment(by: increment)
            case .observe(let timer, let nanoseconds, let times): for _ in 0..<times { timer.recordNanoseconds(nanoseconds) }
            case .level(let meter, let value): meter.set(value)
            }
        }
    }

    /// What a worker's series grew by since the last reading; the baselines move on.
    private static func absorb(_ series: [FigureFile.Series], from path: String, in state: inout State,
                               factory: any MetricsFactory) -> [Intake] {
        guard var worker = state.workers[path] else { return [] }
        var intake: [Intake] = []
        var levels: [SeriesKey: Double] = [:]
        let now = ContinuousClock.now
        let refill = UInt64(max(0, (now - worker.allowanceAt).inSeconds) * Double(replayBudget))
        var budget = min(replayBudget, worker.allowance + min(refill, replayBudget))
        worker.allowanceAt = now
        // A worker's recorder gives each series one slot; a file that names one twice counts the first.
        var seen: Set<SeriesKey> = []
        for entry in series {
            guard let key = key(entry), seen.insert(key).inserted else { continue }
            switch entry.kind {
            case .counter:
                let last = worker.counters[key] ?? 0
                // A count only grows: a smaller one (a torn read, a worker that lies) changes nothing.
                guard entry.value > last else { continue }
                worker.counters[key] = entry.value
                guard entry.value - last <= maximumIncrement else { continue }
                let counter = state.counters[key] ?? Counter(label: key.name, dimensions: dimensions(key), factory: factory)
                state.counters[key] = counter
                intake.append(.count(counter, Int64(entry.value - last)))
            case .histogram:
                let zero = [UInt64](repeating: 0, count: FigureFile.buckets)
                var last = worker.histograms[key] ?? (zero, zero)
                let timer = state.timers[key] ?? CoreMetrics.Timer(label: key.name, dimensions: dimensions(key), factory: factory)
                state.timers[key] = timer
                for bucket in 0..<FigureFile.buckets where entry.counts[bucket] > last.counts[bucket] && budget > 0 {
                    let added = entry.counts[bucket] - last.counts[bucket]
                    let taken = min(added, budget)
                    let grown = entry.sums[bucket] >= last.sums[bucket] ? entry.sums[bucket] - last.sums[bucket] : 0
                    // The part of the sum that goes with the observations taken now (all of it, mostly).
                    let sum = taken == added ? grown : Self.share(of: grown, taken, of: added)
                    last.counts[bucket] += taken
                    last.sums[bucket] = taken == added ? max(entry.sums[bucket], last.sums[bucket]) : last.sums[bucket] &+ sum
                    budget -= taken
                    let mean = bucketed(mean: sum / taken, bucket: bucket)
                    let replayed = state.replayed[key] ?? 0
                    let total = UInt64(mean).multipliedReportingOverflow(by: taken)
                    guard !total.overflow, total.partialValue <= maximumSum - min(replayed, maximumSum) else { continue }
                    state.replayed[key] = replayed + total.partialValue
                    intake.append(.observe(timer, nanoseconds: mean, times: taken))
                }
                worker.histograms[key] = last
            case .gauge:
                let level = Double(bitPattern: entry.value)
                guard level.isFinite, abs(level) < 1e12 else { continue }
                levels[key] = level
            }
        }
        worker.levels = levels
        worker.allowance = budget
        state.workers[path] = worker
        return intake
    }

    /// `total × part / whole`, exactly (rounded down): the sum that goes with `part` of `whole` observations.
    private static func share(of total: UInt64, _ part: UInt64, of whole: UInt64) -> UInt64 {
        let product = total.multipliedFullWidth(by: part)
        // part < whole, so the quotient fits.
        return whole.dividingFullWidth((product.high, product.low)).quotient
    }

    /// A mean duration moved inside its bucket (a torn reading can put it out), in nanoseconds.
    private static func bucketed(mean: UInt64, bucket: Int) -> Int64 {
        let bounds = MetricCatalog.durationBoundsNanoseconds
        let lower = bucket == 0 ? 0 : bounds[bucket - 1] + 1
        let upper = bucket < bounds.count ? bounds[bucket] : longestObservation
        return min(max(Int64(clamping: mean), lower), upper)
    }

    /// Every gauge a live worker reports, set to the sum over the live workers (a gone worker's part, 0).
    private static func levels(in state: inout State, factory: any MetricsFactory) -> [Intake] {
        var sums: [SeriesKey: Double] = [:]
        for worker in state.workers.values {
            for (key, level) in worker.levels { sums[key, default: 0] += level }
        }
        for key in state.meters.keys where sums[key] == nil { sums[key] = 0 }
        return sums.map { key, sum in
            let meter = state.meters[key] ?? Meter(label: key.name, dimensions: dimensions(key), factory: factory)
            state.meters[key] = meter
            return .level(meter, sum)
        }
    }

    /// The series a worker names, if the catalog has it as a service's metric of this kind with exactly
    /// these label names, and values the service counts with.
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
            guard let value = series.labels[label], metric.labelValues[label]?.contains(value) == true else { return nil }
            values.append(value)
        }
        return SeriesKey(name: series.name, labels: values)
    }

    private static func dimensions(_ key: SeriesKey) -> [(String, String)] {
        Array(zip(MetricCatalog.byName[key.name]?.labels ?? [], key.labels))
    }
}

/// Entry points for the figure-file fuzzer (Fuzz/figure-file-fuzzer); not API.
@_spi(Fuzzing) public enum FigureFileFuzzing {
    public static let fileSize = FigureFile.size

    /// What the host does with a worker's figure file, from its bytes (zero-padded to the file's size):
    /// parse it, take it in twice, expose the registry. Only the catalog's families come out; the second
    /// reading of the same file moves no counter or gauge (a histogram may still take observations the
    /// first one deferred), and nothing goes down.
    public static func check(_ bytes: [UInt8]) {
        var file = Array(bytes.prefix(FigureFile.size))
        file += [UInt8](repeating: 0, count: FigureFile.size - file.count)
        guard let series = FigureFile.parse(file) else { return }
        let metrics = HostMetrics(isolation: .process, figures: "/nonexistent", logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
        guard let workers = metrics.workers else { return }
        workers.absorb(series, from: "fuzz")
        let once = metrics.registry.emitToString()
        workers.absorb(series, from: "fuzz")
        let twice = MetricSamples(exposition: metrics.registry.emitToString()).samples
        let first = MetricSamples(exposition: once).samples
        precondition(first.count == twice.count, "a second reading changed the series")
        for (before, after) in zip(first, twice) {
            precondition(before.name == after.name && before.labels == after.labels, "a second reading changed the series")
            let histogram = ["_bucket", "_sum", "_count"].contains { before.name.hasSuffix($0) }
            precondition(histogram ? after.value >= before.value : after.value == before.value,
                         "a second reading of the same file moved \(before.name): \(before.value) → \(after.value)")
        }
        for line in once.split(separator: "\n") where !line.hasPrefix("#") {
            let name = line.prefix { $0 != "{" && $0 != " " }
            let family = MetricCatalog.all.contains { name == $0.name || name.hasPrefix($0.name + "_") }
            precondition(family, "a series outside the catalog: \(line)")
        }
    }
}
