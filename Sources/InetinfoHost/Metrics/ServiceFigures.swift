/// What a worker counted since the host last asked (`figures` on its control channel): counters and
/// histograms as increments, gauges as they are now. Increments, so that the host's totals only ever grow,
/// across any number of worker restarts; what a worker counted after the last collection and before it
/// crashed is lost (the host collects every second, and at every scrape).
struct ServiceFigures: Codable, Sendable, Equatable {
    struct Count: Codable, Sendable, Equatable {
        var name: String
        var labels: [String: String]
        var increment: Int64
    }

    struct Level: Codable, Sendable, Equatable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// A histogram's new observations, per bucket of ``MetricCatalog/durationBuckets`` plus one past the
    /// last: how many, and their sum in nanoseconds.
    struct Spread: Codable, Sendable, Equatable {
        var name: String
        var labels: [String: String]
        var counts: [Int64]
        var sumsNanoseconds: [Int64]
    }

    var counts: [Count] = []
    var levels: [Level] = []
    var spreads: [Spread] = []

    var isEmpty: Bool { counts.isEmpty && levels.isEmpty && spreads.isEmpty }
}
