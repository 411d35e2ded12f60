import CoreMetrics
import NIOCore
import NIOHTTP1

/// The HTTP service's figures, through swift-metrics: requests by method and status class, content bytes
/// sent, request durations, connections. One per instance, shared by every connection's handlers; the
/// metric objects are made once here, so a request costs a few atomic increments and one histogram entry.
public final class HTTPMetrics: Sendable {
    /// Methods counted by name. The method is the client's choice: anything else is `other`, so that no
    /// client can grow the number of series (every scraper keeps each one forever).
    static let methods: [HTTPMethod] = [.GET, .HEAD, .POST, .PUT, .DELETE, .OPTIONS, .TRACE, .CONNECT, .PATCH]
    /// The method label of a response that answers no complete request head (a 408 for a head that never
    /// finished, a 400 for one that did not parse, a 431 for one too large).
    static let noRequest = "none"
    static let statusClasses = ["1xx", "2xx", "3xx", "4xx", "5xx"]
    /// Every value of the `method` and `code` labels this service counts with (a host that takes figures
    /// from workers takes no other).
    public static let labelValues: [String: [String]] = [
        "method": methods.map(\.rawValue) + ["other", noRequest], "code": statusClasses,
    ]

    /// `inetinfo_http_requests_total{method,code}`, indexed [method][class]: the named methods, then
    /// `other`, then ``noRequest``.
    private let requests: [[Counter]]
    let contentBytes: Counter
    let durations: Timer
    let connectionsOpen: Meter
    let connectionsTotal: Counter

    /// Makes every series of the service (at 0 until counted).
    public init(factory: any MetricsFactory) {
        let labels = Self.methods.map(\.rawValue) + ["other", Self.noRequest]
        requests = labels.map { method in
            Self.statusClasses.map { code in
                Counter(label: "inetinfo_http_requests_total", dimensions: [("method", method), ("code", code)], factory: factory)
            }
        }
        contentBytes = Counter(label: "inetinfo_http_response_content_bytes_total", factory: factory)
        durations = Timer(label: "inetinfo_http_request_duration_seconds", factory: factory)
        connectionsOpen = Meter(label: "inetinfo_http_connections_open", factory: factory)
        connectionsTotal = Counter(label: "inetinfo_http_connections_total", factory: factory)
    }

    /// A response ended: `method` is `nil` for one that answers no request head.
    func responded(method: HTTPMethod?, status: UInt, contentBytes bytes: Int, nanoseconds: Int64) {
        let row: Int
        if let method {
            row = Self.methods.firstIndex(of: method) ?? Self.methods.count
        } else {
            row = Self.methods.count + 1
        }
        // This service sends only the statuses it knows (1xx to 5xx); anything else would be counted as 5xx.
        let column = min(max(Int(status / 100), 1), 5) - 1
        requests[row][column].increment()
        if bytes > 0 { contentBytes.increment(by: bytes) }
        durations.recordNanoseconds(nanoseconds)
    }
}

/// One connection's requests between their heads' arrival and their responses' ends, in order (responses
/// to pipelined requests go out in the order of the requests). Used on the connection's event loop only.
final class ExchangeMeter {
    private let metrics: HTTPMetrics
    /// Requests whose head arrived and whose response has not ended: method and arrival, oldest first.
    private var waiting: [(method: HTTPMethod, since: NIODeadline)] = []
    private var first = 0
    private var status: UInt = 0
    private var bytes = 0

    init(metrics: HTTPMetrics) { self.metrics = metrics }

    func requestArrived(_ head: HTTPRequestHead) {
        waiting.append((head.method, .now()))
    }

    func responseBegan(status: UInt) {
        self.status = status
        bytes = 0
    }

    func contentSent(_ count: Int) { bytes += count }

    func responseEnded() {
        let request: (method: HTTPMethod, since: NIODeadline)?
        if first < waiting.count {
            request = waiting[first]
            first += 1
            if first == waiting.count {
                waiting.removeAll(keepingCapacity: true)
                first = 0
            }
        } else {
            request = nil
        }
        let nanoseconds = request.map { (NIODeadline.now() - $0.since).nanoseconds } ?? 0
        metrics.responded(method: request?.method, status: status, contentBytes: bytes, nanoseconds: nanoseconds)
    }
}
