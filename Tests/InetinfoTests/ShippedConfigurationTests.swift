import Foundation
import InetinfoTestKit
import Testing

/// Every configuration the project ships must be one the host starts with: an unknown key or a bad
/// value there would stop every operator's host with exit 78 (`inetinfo --check-config` is the check an
/// operator runs; docs/operations.md).
struct ShippedConfigurationTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The `inetinfo.toml: |` block of a Kubernetes ConfigMap, dedented (a YAML literal block: every line
    /// indented at least as much as its first).
    static func configMapTOML(_ path: String) throws -> String {
        let lines = try String(contentsOf: repository.appendingPathComponent(path), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0.trimmingCharacters(in: .whitespaces) == "inetinfo.toml: |" }) else {
            throw TestHostError("\(path) has no inetinfo.toml block")
        }
        let block = lines[(start + 1)...].prefix { $0.isEmpty || $0.hasPrefix("    ") }
        return block.map { $0.isEmpty ? "" : String($0.dropFirst(4)) }.joined(separator: "\n")
    }

    static func check(configFile: String) throws -> CommandResult {
        try CommandResult.run(try TestHost.locateBinary(), ["--config", configFile, "--check-config"])
    }

    @Test func theDefaultConfigurationAndTheKubernetesOneAreValid() throws {
        let shipped = try Self.check(configFile: Self.repository.appendingPathComponent("config/inetinfo.toml").path)
        #expect(shipped.status == 0, "config/inetinfo.toml: \(shipped.stderr)")

        let toml = try Self.configMapTOML("deploy/kubernetes/configmap.yaml")
        #expect(toml.contains("[admin]"))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-k8s-\(UUID().uuidString.prefix(8)).toml")
        try toml.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let kubernetes = try Self.check(configFile: file.path)
        #expect(kubernetes.status == 0, "the ConfigMap's inetinfo.toml: \(kubernetes.stderr)")
    }

    @Test func checkConfigNamesTheBadKeyAndExits78() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("inetinfo-bad-\(UUID().uuidString.prefix(8)).toml")
        try "[supervisor]\nthreads = 2\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let bad = try Self.check(configFile: file.path)
        #expect(bad.status == 78)
        #expect(bad.stderr.contains("supervisor.threads: unknown key"), "\(bad.stderr)")
    }
}
