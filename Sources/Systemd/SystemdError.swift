import Glibc

/// A libsystemd call failed; `errno` is the positive error number it returned negated.
public struct SystemdError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var errno: Int32

    public init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        "\(operation) failed: \(String(cString: strerror(errno)))"
    }
}
