import Foundation

/// The HTTP service's own configuration keys (`http.*`).
public struct HTTPSettings: Sendable {
    public static let defaultOptions: [String: String] = ["web-root": ""]

    /// The directory served, resolved to an absolute path without symlinks.
    public var webRoot: String

    public init(options: [String: String], hostName: String, services: [(String, Bool, [String])]) throws {
        var root = options["web-root"] ?? ""
        if root.isEmpty {
            guard let bundled = Bundle.module.url(forResource: "DefaultWebRoot", withExtension: nil) else {
                throw HTTPConfigurationError("the default web root is missing from the installation; set http.web-root")
            }
            root = bundled.path
        }
        guard let resolved = realpath(root, nil) else {
            throw HTTPConfigurationError("http.web-root: \(root): \(String(cString: strerror(errno)))")
        }
        defer { free(resolved) }
        webRoot = String(cString: resolved)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: webRoot, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw HTTPConfigurationError("http.web-root: \(root) is not a directory")
        }
    }
}

public struct HTTPConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
