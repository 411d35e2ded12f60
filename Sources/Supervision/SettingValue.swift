/// The one definition of how configuration text becomes a value: booleans, integers within a range and
/// durations, for the host's keys and every service's own. Nothing here traps, whatever the text:
/// `inf`, `nan`, `-0`, `1e400` and 40-digit numbers are errors that name the key, never values.
public enum SettingValue {
    /// `true|yes|on|1` and `false|no|off|0`, in any case.
    public static func bool(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: return nil
        }
    }

    /// A decimal integer within `range`, or why not.
    public static func integer(_ text: String, in range: ClosedRange<Int>) -> Result<Int, SettingProblem> {
        guard let number = Int(text) else { return .failure(SettingProblem("'\(text)' is not an integer")) }
        guard range.contains(number) else { return .failure(SettingProblem("\(number) is outside \(describe(range))")) }
        return .success(number)
    }

    /// A finite number of seconds within `range` (fractions allowed), as a duration to the millisecond.
    public static func seconds(_ text: String, in range: ClosedRange<Double>) -> Result<Duration, SettingProblem> {
        guard let number = Double(text), number.isFinite else {
            return .failure(SettingProblem("'\(text)' is not a number of seconds"))
        }
        guard range.contains(number) else {
            return .failure(SettingProblem("\(text) is outside \(describe(range)) seconds"))
        }
        // The range keeps the product far inside Int64.
        return .success(.milliseconds(Int64((number * 1000).rounded())))
    }

    static func describe(_ range: ClosedRange<Int>) -> String { "the range \(range.lowerBound)...\(range.upperBound)" }

    static func describe(_ range: ClosedRange<Double>) -> String {
        func text(_ value: Double) -> String { value == value.rounded() ? String(Int(value)) : String(value) }
        return "the range \(text(range.lowerBound))...\(text(range.upperBound))"
    }
}

/// Why a configuration value was refused (the caller adds the key and where it came from).
public struct SettingProblem: Error, CustomStringConvertible, Sendable, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A service's own configuration value that was refused: the key within the service's section
/// (`max-sessions` of `smtp`) and why. The host reports it as `smtp.max-sessions: …` with exit status 78.
public struct SettingError: Error, CustomStringConvertible, Sendable, Equatable {
    public var section: String
    public var key: String
    public var problem: String

    public init(section: String, key: String, problem: String) {
        self.section = section
        self.key = key
        self.problem = problem
    }

    public var description: String { "\(section).\(key): \(problem)" }
}

/// A service's own keys (`smtp.*`, `http.*`) as text, read with their documented ranges.
public struct ServiceOptions: Sendable {
    public let section: String
    let values: [String: String]
    let defaults: [String: String]

    public init(section: String, values: [String: String], defaults: [String: String]) {
        self.section = section
        self.values = values
        self.defaults = defaults
    }

    /// The text of `key`: set, or its default.
    public func text(_ key: String) -> String {
        values[key] ?? defaults[key] ?? ""
    }

    public func error(_ key: String, _ problem: String) -> SettingError {
        SettingError(section: section, key: key, problem: problem)
    }

    public func integer(_ key: String, in range: ClosedRange<Int>) throws(SettingError) -> Int {
        switch SettingValue.integer(text(key), in: range) {
        case .success(let value): return value
        case .failure(let problem): throw error(key, problem.description)
        }
    }

    public func bool(_ key: String) throws(SettingError) -> Bool {
        guard let value = SettingValue.bool(text(key)) else {
            throw error(key, "'\(text(key))' is not a boolean (true or false)")
        }
        return value
    }
}
