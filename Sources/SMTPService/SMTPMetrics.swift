import CoreMetrics

/// The SMTP service's figures, through swift-metrics: sessions, accepted messages and their size, replies
/// by class, and how long a delivery (the commit to stable storage) takes. One per instance, shared by every
/// session; the metric objects are made once here.
public final class SMTPMetrics: Sendable {
    let sessionsOpen: Meter
    let sessionsTotal: Counter
    /// Messages acknowledged with 250 after their content: on stable storage (or discarded, in discard mode).
    let messagesAccepted: Counter
    let messageBytes: Counter
    /// `inetinfo_smtp_replies_total{class}`: 2xx, 3xx, 4xx, 5xx (RFC 5321 §4.2.1's first digit).
    private let replies: [Counter]
    /// From the end of a message's content to its acknowledgement.
    let deliveryDurations: Timer

    /// Every value of the `class` label this service counts with (a host that takes figures from workers
    /// takes no other).
    public static let replyClasses = ["2xx", "3xx", "4xx", "5xx"]

    /// Makes every series of the service (at 0 until counted).
    public init(factory: any MetricsFactory) {
        sessionsOpen = Meter(label: "inetinfo_smtp_sessions_open", factory: factory)
        sessionsTotal = Counter(label: "inetinfo_smtp_sessions_total", factory: factory)
        messagesAccepted = Counter(label: "inetinfo_smtp_messages_accepted_total", factory: factory)
        messageBytes = Counter(label: "inetinfo_smtp_message_bytes_total", factory: factory)
        replies = Self.replyClasses.map {
            Counter(label: "inetinfo_smtp_replies_total", dimensions: [("class", $0)], factory: factory)
        }
        deliveryDurations = Timer(label: "inetinfo_smtp_delivery_duration_seconds", factory: factory)
    }

    /// A reply went out; `text` begins with its code (every reply this service sends does).
    func replied(_ text: String) {
        guard let first = text.utf8.first, first >= UInt8(ascii: "2"), first <= UInt8(ascii: "5") else { return }
        replies[Int(first - UInt8(ascii: "2"))].increment()
    }
}
