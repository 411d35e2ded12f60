import Foundation
import TOMLKit

/// Configuration as flat `section.key` → text pairs, merged from layers (file, `--set`, flags); the
/// last layer that sets a key wins. ``HostConfiguration`` gives the values their types.
public struct ConfigurationValues: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var value: String
        /// Where the value came from, for error messages (`inetinfo.toml`, `--set`, `--smtp-listen`).
        public var source: String
    }

    public private(set) var entries: [String: Entry] = [:]

    public init() {}

    public subscript(key: String) -> Entry? { entries[key] }

    public mutating func set(_ key: String, _ value: String, source: String) {
        entries[key] = Entry(value: value, source: source)
    }

    /// Reads a TOML file: tables become key prefixes (`[supervisor] max-restarts = 3` is
    /// `supervisor.max-restarts`); arrays of strings become comma-separated lists.
    public mutating func load(tomlFile path: String) throws {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(key: nil, problem: "cannot read: \(error.localizedDescription)", source: path)
        }
        try load(tomlText: text, source: path)
    }

    /// Reads TOML text as ``load(tomlFile:)`` does; `source` names it in errors (the file's path).
    public mutating func load(tomlText text: String, source: String) throws {
        if let (line, problem) = TOMLPreflight.firstProblem(in: text) {
            throw ConfigurationError(key: nil, problem: "not valid TOML: \(problem) (line \(line))", source: source)
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(key: nil, problem: "not valid TOML: \(error.description) (line \(error.source.begin.line))", source: source)
        }
        try flatten(table, prefix: "", source: source)
    }

    /// Applies `KEY=VALUE` as given to `--set`.
    public mutating func apply(assignment: String) throws {
        guard let equals = assignment.firstIndex(of: "="), equals != assignment.startIndex else {
            throw ConfigurationError(key: nil, problem: "'\(assignment)' is not KEY=VALUE", source: "--set")
        }
        let key = String(assignment[..<equals]).trimmingCharacters(in: .whitespaces)
        let value = String(assignment[assignment.index(after: equals)...]).trimmingCharacters(in: .whitespaces)
        set(key, value, source: "--set")
    }

    private mutating func flatten(_ table: TOMLTable, prefix: String, source: String) throws {
        for key in table.keys {
            guard let value = table[key] else { continue }
            let name = prefix.isEmpty ? key : "\(prefix).\(key)"
            switch value.type {
            case .table:
                try flatten(value.table!, prefix: name, source: source)
            case .string:
                set(name, value.string!, source: source)
            case .int:
                set(name, String(value.int!), source: source)
            case .double:
                set(name, String(value.double!), source: source)
            case .bool:
                set(name, String(value.bool!), source: source)
            case .array:
                let items = value.array!.map { item -> String in
                    item.string ?? item.int.map(String.init) ?? String(describing: item)
                }
                set(name, items.joined(separator: ","), source: source)
            default:
                throw ConfigurationError(key: name, problem: "dates and times are not configuration values", source: source)
            }
        }
    }
}
