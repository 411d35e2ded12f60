import CoreMetrics
import Foundation
import HostControl
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
        workers.workerEnded(101)
        #expect(!FileManager.default.fileExists(atPath: first))
        samples = MetricSamples(exposition: metrics.registry.emitToString())
        #expect(samples.value("inetinfo_http_requests_total", ["method": "GET", "code": "2xx"]) == 47)
        #expect(samples.value("inetinfo_http_connections_open") == 1)
        #expect(samples.value("inetinfo_http_request_duration_seconds_count") == 2)
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
