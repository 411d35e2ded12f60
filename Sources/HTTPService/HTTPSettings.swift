import Foundation
import Supervision

/// The HTTP service's own configuration keys (`http.*`), documented in docs/configuration.md.
public struct HTTPSettings: Sendable {
    public static let defaultOptions: [String: String] = [
        "web-root": "",
        "keepalive-timeout": "60",
        "header-timeout": "10",
        "send-timeout": "60",
        "max-connections": "1000",
        "max-connections-per-client": "100",
        "max-request-line": "8192",
        "max-header-size": "32768",
        "max-headers": "100",
        "max-body-size": "1048576",
        "access-log": "log",
        "file-cache-size": "16777216",
    ]

    /// The documented range of every numeric key (docs/configuration.md): values outside are refused at
    /// start and on reload. The upper bounds keep every sum and every conversion to NIO's nanoseconds far
    /// from overflowing.
    public static let ranges: [String: ClosedRange<Int>] = [
        "keepalive-timeout": 1...86_400,
        "header-timeout": 1...3_600,
        "send-timeout": 1...86_400,
        "max-connections": 1...1_000_000,
        "max-connections-per-client": 1...1_000_000,
        "max-request-line": 64...1_048_576,
        "max-header-size": 256...1_048_576,
        "max-headers": 1...10_000,
        "max-body-size": 0...1_073_741_824,
        "file-cache-size": 0...17_179_869_184,
    ]

    /// Where the access log goes.
    public enum AccessLog: Sendable, Equatable {
        case off
        /// Where the host logs: the journal (`SYSLOG_IDENTIFIER=inetinfo-access`) or standard error, in blocks.
        case log
        /// Appended to this file, buffered.
        case file(String)
    }

    /// The directory served, resolved to an absolute path without symlinks.
    public var webRoot: String
    public var keepAliveTimeoutSeconds: Int
    public var headerTimeoutSeconds: Int
    /// A response that makes no progress this long closes its connection (``ServerInstance``'s connection head handler).
    public var sendTimeoutSeconds: Int
    public var maxConnections: Int
    public var maxConnectionsPerClient: Int
    public var maxRequestLine: Int
    public var maxHeaderSize: Int
    public var maxHeaders: Int
    public var maxBodySize: Int
    public var accessLog: AccessLog
    /// Bytes of resolved paths and small files' content kept in memory; 0 turns the cache off.
    public var fileCacheSize: Int

    /// Reads and checks the `http.*` keys; throws ``SettingError`` naming the key.
    /// - Parameters:
    ///   - renderDirectory: where the default web site is written, with this host's name and services
    ///     filled in; nil serves the shipped template as it is (and writes nothing: a check of the
    ///     configuration passes nil).
    public init(options values: [String: String], hostName: String, services: [(String, Bool, [String])],
                renderDirectory: String? = nil) throws(SettingError) {
        let options = ServiceOptions(section: "http", values: values, defaults: Self.defaultOptions)
        func number(_ key: String) throws(SettingError) -> Int { try options.integer(key, in: Self.ranges[key]!) }
        var root = options.text("web-root")
        if root.isEmpty {
            guard let bundled = Self.defaultSiteTemplate() else {
                throw options.error("web-root", "the default web site is missing from this installation (looked in \(Self.templateCandidates().map(\.path).joined(separator: ", "))); set http.web-root")
            }
            if let renderDirectory {
                do {
                    root = try Self.renderDefaultSite(from: bundled, into: renderDirectory, hostName: hostName, services: services)
                } catch {
                    throw options.error("web-root", error.description)
                }
            } else {
                root = bundled.path
            }
        }
        guard let resolved = realpath(root, nil) else {
            throw options.error("web-root", "\(root): \(String(cString: strerror(errno)))")
        }
        defer { free(resolved) }
        webRoot = String(cString: resolved)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: webRoot, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw options.error("web-root", "\(root) is not a directory")
        }
        keepAliveTimeoutSeconds = try number("keepalive-timeout")
        headerTimeoutSeconds = try number("header-timeout")
        sendTimeoutSeconds = try number("send-timeout")
        maxConnections = try number("max-connections")
        maxConnectionsPerClient = try number("max-connections-per-client")
        maxRequestLine = try number("max-request-line")
        maxHeaderSize = try number("max-header-size")
        maxHeaders = try number("max-headers")
        maxBodySize = try number("max-body-size")
        fileCacheSize = try number("file-cache-size")
        switch options.text("access-log") {
        case "off", "": accessLog = .off
        case "log": accessLog = .log
        case let path:
            // Checked here, so that --check-config and a start refuse it (78, naming the key) instead of
            // each instance failing to open it and the service restarting until it is given up on.
            let folder = (path as NSString).deletingLastPathComponent
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: folder.isEmpty ? "." : folder, isDirectory: &isDirectory),
                  isDirectory.boolValue
            else {
                throw options.error("access-log", "'\(path)' is not off, log, or a file in an existing folder")
            }
            accessLog = .file(path)
        }
    }
}

extension HTTPSettings {
    /// Where the default web site's template may be: installed beside the binary
    /// (`<prefix>/bin/inetinfo` → `<prefix>/share/inetinfo/www`), or the resource bundle SwiftPM puts next
    /// to a built binary. `Bundle.module` is not used: it traps when the build tree is gone.
    static func templateCandidates() -> [URL] {
        let executable = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        let directory = executable.resolvingSymlinksInPath().deletingLastPathComponent()
        return [
            directory.deletingLastPathComponent().appendingPathComponent("share/inetinfo/www"),
            directory.appendingPathComponent("inetinfo_HTTPService.resources/DefaultWebRoot"),
        ]
    }

    static func defaultSiteTemplate() -> URL? {
        templateCandidates().first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("index.html").path) }
    }

    /// Writes the default welcome page with the host's name and its services, so that it says which
    /// host this is and what it runs (the IIS "default web site" of this project).
    static func renderDefaultSite(from template: URL, into directory: String, hostName: String,
                                  services: [(String, Bool, [String])]) throws(HTTPConfigurationError) -> String {
        func escaped(_ text: String) -> String {
            text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;")
        }
        let rows = services.map { name, enabled, listen in
            "<tr><td>\(escaped(name))</td><td>\(enabled ? "enabled" : "disabled")</td><td>\(escaped(listen.joined(separator: ", ")))</td></tr>"
        }.joined(separator: "\n")
        do {
            let page = try String(contentsOf: template.appendingPathComponent("index.html"), encoding: .utf8)
                .replacingOccurrences(of: "{{host}}", with: escaped(hostName))
                .replacingOccurrences(of: "{{services}}", with: rows)
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data(page.utf8).write(to: URL(fileURLWithPath: directory).appendingPathComponent("index.html"), options: .atomic)
        } catch {
            throw HTTPConfigurationError("cannot write the default web site to \(directory): \(error.localizedDescription)")
        }
        return directory
    }
}

public struct HTTPConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
