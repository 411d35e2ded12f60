import Foundation

/// The samples of a Prometheus text exposition: `name{label="value",…} number` lines (comments skipped),
/// as this host writes them (label values are plain words: no escaped quotes or commas). Enough for
/// `status --watch`'s rates and for tests to read figures; the format itself is checked with Prometheus'
/// own tools (docs/testing.md).
public struct MetricSamples: Sendable {
    public struct Sample: Sendable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public var samples: [Sample] = []

    public init(exposition: String) {
        for line in exposition.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            var labels: [String: String] = [:]
            var name = String(series)
            if let brace = series.firstIndex(of: "{"), series.hasSuffix("}") {
                name = String(series[..<brace])
                let inner = series[series.index(after: brace)..<series.index(before: series.endIndex)]
                // Label values here are plain words (no escaped quotes or commas).
                for pair in inner.split(separator: ",") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    guard parts.count == 2 else { continue }
                    labels[String(parts[0])] = String(parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")))
                }
            }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
    }

    /// The value of the series named so with (at least) these labels, summed when several match; `nil` when
    /// none does.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = samples.filter { sample in
            sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value }
        }
        guard !matching.isEmpty else { return nil }
        return matching.reduce(0) { $0 + $1.value }
    }

    /// The sum over every series named so with these labels (0 when there is none).
    public func sum(_ name: String, _ labels: [String: String] = [:]) -> Double {
        value(name, labels) ?? 0
    }
}
