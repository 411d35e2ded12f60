/// A configuration that cannot be used, with the key and the reason.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var key: String?
    public var problem: String
    public var source: String

    public init(key: String?, problem: String, source: String) {
        self.key = key
        self.problem = problem
        self.source = source
    }

    public var description: String {
        if let key { return "\(source): \(key): \(problem)" }
        return "\(source): \(problem)"
    }
}
