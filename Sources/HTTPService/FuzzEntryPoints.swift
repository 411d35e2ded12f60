import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import Supervision

/// Entry points for the libFuzzer targets in Fuzz/ (`@_spi(Fuzzing) import HTTPService`): the internal
/// parsers and the connection pipeline, reached without making them part of the module's API.
@_spi(Fuzzing) public enum HTTPFuzzing {
    /// What one HTTP connection of the service needs besides its channel, made once and shared by every
    /// connection as ``HTTPService`` shares them: the settings, the connection limiter, the file cache and
    /// the access log.
    public final class Site: @unchecked Sendable {
        public let settings: HTTPSettings
        public let connections: ConnectionLimiter
        let files: FileCache
        let accessLog: AccessLogSink?
        /// Counted (into nothing): the fuzzer drives the metered path, as a host with metrics runs it.
        let metrics = HTTPMetrics(factory: NOOPMetricsHandler.instance)

        /// - Parameter accessLog: whether connections get the access log handler (written to /dev/null).
        public init(settings: HTTPSettings, accessLog: Bool) throws {
            self.settings = settings
            connections = ConnectionLimiter(limit: settings.maxConnections, perClientLimit: settings.maxConnectionsPerClient)
            files = FileCache(capacity: settings.fileCacheSize)
            let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
            self.accessLog = try AccessLogSink.make(accessLog ? .file("/dev/null") : .off, logger: logger)
        }

        /// Installs exactly the handlers ``HTTPService`` installs on a connection; call on the channel's
        /// event loop. `accessLog` overrides the site's choice for this connection.
        public func makePipeline(channel: any Channel, accessLog: Bool? = nil) throws {
            let log = (accessLog ?? true) ? self.accessLog : nil
            try HTTPService.addHandlers(to: channel.pipeline.syncOperations, settings: settings, connections: connections,
                                        files: files, accessLog: log, metrics: metrics)
        }
    }

    /// Settings for a site at `webRoot`, as `[http] web-root = …` with other keys as given.
    public static func makeSettings(webRoot: String, options: [String: String] = [:]) throws -> HTTPSettings {
        try HTTPSettings(options: options.merging(["web-root": webRoot], uniquingKeysWith: { $1 }), hostName: "fuzz", services: [])
    }

    // MARK: Fields

    /// ``HTTPDate/parse(_:)``.
    public static func parseDate(_ text: String) -> Int? { HTTPDate.parse(text) }

    /// ``HTTPDate/format(seconds:)`` (IMF-fixdate).
    public static func formatDate(seconds: Int) -> String { HTTPDate.format(seconds: seconds) }

    /// ``ByteRange/parse(_:size:)``: nil for a header that is ignored, an empty range for an unsatisfiable one.
    public enum RangeAnswer: Equatable, Sendable {
        case satisfiable(Range<Int>)
        case unsatisfiable
        case ignored
    }

    public static func parseRange(_ header: String, size: Int) -> RangeAnswer {
        switch ByteRange.parse(header, size: size) {
        case .satisfiable(let range): return .satisfiable(range)
        case .unsatisfiable: return .unsatisfiable
        case .ignored: return .ignored
        }
    }

    /// ``Validators``: the entity tag, whether the preconditions answer 304 or 412, and `rangeApplies`, for a
    /// file with these validators.
    public static func validatorsCheck(size: Int, modifiedSeconds: Int, modifiedNanoseconds: Int, headers: HTTPHeaders)
        -> (etag: String, notModified: Bool, preconditionFailed: Bool, rangeApplies: Bool) {
        let validators = Validators(size: size, modifiedSeconds: modifiedSeconds, modifiedNanoseconds: modifiedNanoseconds)
        let precondition = validators.precondition(headers)
        return (validators.etag, precondition == .notModified, precondition == .failed, validators.rangeApplies(headers))
    }

    /// ``WebRootPath/resolve(target:root:)``: the file's real path, or nil when refused, not found or a
    /// redirect.
    public static func resolve(target: String, root: String) -> String? {
        if case .file(let path, _, _) = WebRootPath.resolve(target: target, root: root) { return path }
        return nil
    }

    /// ``MediaType/forPath(_:)``.
    public static func mediaType(_ path: String) -> String { MediaType.forPath(path) }
}
