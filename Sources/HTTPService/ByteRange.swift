import Foundation

/// A single `Range: bytes=…` (RFC 9110 §14.1.2). Several ranges are answered with the whole file.
enum ByteRange: Equatable {
    case satisfiable(Range<Int>)
    case unsatisfiable
    case ignored

    static func parse(_ header: String, size: Int) -> ByteRange {
        guard header.lowercased().hasPrefix("bytes=") else { return .ignored }
        let spec = header.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(",") else { return .ignored }
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard parts.count == 2 else { return .ignored }
        let digits: (String) -> Bool = { !$0.isEmpty && $0.count <= 18 && $0.allSatisfy(\.isASCIIDigit) }
        if parts[0].isEmpty {
            // A suffix range: the last N bytes.
            guard digits(parts[1]), let length = Int(parts[1]) else { return .ignored }
            guard length > 0, size > 0 else { return .unsatisfiable }
            return .satisfiable(max(0, size - length)..<size)
        }
        guard digits(parts[0]), let first = Int(parts[0]) else { return .ignored }
        guard first < size else { return .unsatisfiable }
        if parts[1].isEmpty { return .satisfiable(first..<size) }
        guard digits(parts[1]), let last = Int(parts[1]), last >= first else { return .ignored }
        return .satisfiable(first..<min(last + 1, size))
    }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}
