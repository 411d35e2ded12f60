import CoreMetrics
import Foundation
import HostControl
import InetinfoTestKit
@testable import InetinfoHost
import Logging
import Prometheus
import Testing

/// A worker's figure file, written as a worker writes it and taken in as the host does: exact counts
/// and histograms, gauges summed over live workers and dropped with them, nothing counted twice.
struct FigureFileTests {
    static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-figures-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func whatAWorkerCountsReachesTheHostExactlyOnceAndSurvivesItsEnd() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let metrics = HostMetrics(isolation: .process, figures: directory, logger: Logger(label: "test"))
        let workers = try #require(metrics.workers)

        // Two workers of the HTTP service, as two processes would: each its own file and recorder.
        let first = try #require(workers.create(for: 101, service: "http"))
        let second = try #require(workers.create(for: 102, service: "http"))
        let one = HTTPMetricsProbe(recorder: try FigureRecorder(path: first))
        let two = HTTPMetricsProbe(recorder: try FigureRecorder(path: second))

        one.requests.increment(by: 40)
        one.open.increment(by: 3)
        one.durations.recordNanoseconds(700_000)       // 0.7 ms: the 1 ms bucket
        one.durations.recordNanoseconds(3_000_000_000)  // 3 s: the 5 s bucket
        two.requests.increment(by: 2)
        two.open.increment(by: 1)
        workers.collect()
        var samples = MetricSamples(exposition: metrics.registry.emitToString())
        #expect(samples.value("inetinfo_http_requests_total", ["method": "GET", "code": "2xx"]) == 42)
        #expect(samples.value("inetinfo_http_connections_open") == 4)
        #expect(samples.value("inetinfo_http_request_duration_seconds_count") == 2)
        #expect(samples.value("inetinfo_http_request_duration_seconds_bucket", ["le": "0.001"]) == 1)
        #expect(samples.value("inetinfo_http_request_duration_seconds_bucket", ["le": "2.5"]) == 1)
        #expect(samples.value("inetinfo_http_request_duration_seconds_bucket", ["le": "5.0"]) == 2)
        let sum = samples.value("inetinfo_http_request_duration_seconds_sum") ?? -1
        #expect(abs(sum - 3.0007) < 1e-9, "sum \(sum)")

        // Nothing new: nothing added. Then the first worker counts once more and dies (no collection in
        // between): its last counts are taken, its gauge goes, its file too.
        workers.collect()
        one.requests.increment(by: 5)
        workers.workerEnded(first)
        #expect(!FileManager.default.fileExists(atPath: first))
        samples = MetricSamples(exposition: metrics.registry.emitToString())
        #expect(samples.value("inetinfo_http_requests_total", ["method": "GET", "code": "2xx"]) == 47)
        #expect(samples.value("inetinfo_http_connections_open") == 1)
        #expect(samples.value("inetinfo_http_request_duration_seconds_count") == 2)
    }

    /// A worker names only what its service counts: other label values, other families, a count that
    /// goes down are ignored; a flood of observations is replayed a bounded part per reading, the rest at
    /// the next, nothing lost.
    @Test func aWorkerCannotInventSeriesAndItsObservationsComeInBoundedParts() async throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let metrics = HostMetrics(isolation: .process, figures: directory, logger: Logger(label: "test"))
        let workers = try #require(metrics.workers)
        let path = try #require(workers.create(for: 201, service: "http"))
        let recorder = try FigureRecorder(path: path)

        Counter(label: "inetinfo_http_requests_total", dimensions: [("method", "BREW"), ("code", "2xx")], factory: recorder).increment()
        Counter(label: "inetinfo_http_requests_total", dimensions: [("method", "GET"), ("code", "9xx")], factory: recorder).increment()
        Counter(label: "inetinfo_made_up_total", factory: recorder).increment()
        Counter(label: "process_open_fds", factory: recorder).increment()  // the host's own, not a worker's
        let flood = Timer(label: "inetinfo_http_request_duration_seconds", factory: recorder)
        let count = Int(WorkerFigures.replayBudget) + 50_000
        for _ in 0..<count { flood.recordNanoseconds(2_000_000) }

        workers.collect()
        var samples = MetricSamples(exposition: metrics.registry.emitToString())
        #expect(samples.samples.filter { $0.name == "inetinfo_http_requests_total" }.isEmpty, "\(samples.samples.filter { $0.name.hasPrefix("inetinfo_http_requests") })")
        #expect(samples.value("inetinfo_made_up_total") == nil)
        #expect(samples.value("process_open_fds") == nil)
        #expect(samples.value("inetinfo_http_request_duration_seconds_count") == Double(WorkerFigures.replayBudget))

        // The rest comes as the allowance refills (a second's worth of the budget per second).
        samples = try await Deadline.eventually("the rest of the observations", timeout: .seconds(10), every: .milliseconds(100)) {
            workers.collect()
            let now = MetricSamples(exposition: metrics.registry.emitToString())
            return now.value("inetinfo_http_request_duration_seconds_count") == Double(count) ? now : nil
        }
        let sum = samples.value("inetinfo_http_request_duration_seconds_sum") ?? -1
        #expect(abs(sum - Double(count) * 0.002) < 1e-6, "sum \(sum)")
        #expect(samples.value("inetinfo_http_request_duration_seconds_bucket", ["le": "0.001"]) == 0)
        #expect(samples.value("inetinfo_http_request_duration_seconds_bucket", ["le": "0.0025"]) == Double(count))
    }

    @Test func aFileThatIsNotAFigureFileIsIgnored() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/other"
        try Data(count: FigureFile.size).write(to: URL(fileURLWithPath: path))  // no magic
        #expect(FigureFile.read(path: path) == nil)
        try Data(count: 10).write(to: URL(fileURLWithPath: path))
        #expect(FigureFile.read(path: path) == nil)
        try FileManager.default.createSymbolicLink(atPath: directory + "/link", withDestinationPath: path)
        #expect(FigureFile.read(path: directory + "/link") == nil)
        #expect(FigureFile.read(path: directory + "/missing") == nil)
    }
}

/// The HTTP service's series a test drives (the names and labels HTTPMetrics uses).
private struct HTTPMetricsProbe {
    let requests: CoreMetrics.Counter
    let open: Meter
    let durations: CoreMetrics.Timer

    init(recorder: FigureRecorder) {
        requests = Counter(label: "inetinfo_http_requests_total", dimensions: [("method", "GET"), ("code", "2xx")], factory: recorder)
        open = Meter(label: "inetinfo_http_connections_open", factory: recorder)
        durations = Timer(label: "inetinfo_http_request_duration_seconds", factory: recorder)
    }
}
