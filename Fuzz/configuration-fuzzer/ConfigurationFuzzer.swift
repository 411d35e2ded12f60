// libFuzzer target over the host's configuration, through the code the host runs: TOML text loaded into
// ConfigurationValues (as `--config FILE` is), `--set KEY=VALUE` assignments applied on top, then
// HostConfiguration built from them with every service's checks. Any thrown error is a refusal, which is
// fine; a trap is a bug. A configuration that is accepted must be accepted again from its own values.
//
// Input: TOML text, then, after each NUL byte, one `--set` assignment.
//
// Fuzz:   scripts/fuzz.sh configuration-fuzzer [SECONDS]
// Replay: swift run configuration-fuzzer FILE…
import Foundation
import InetinfoHost

/// The state directory the checks may name; nothing is written there (the checks write nothing).
let environment = ["STATE_DIRECTORY": "/tmp/configuration-fuzzer-state"]

func exercise(_ data: UnsafeRawBufferPointer) {
    let parts = data.split(separator: 0, omittingEmptySubsequences: false)
    let toml = parts.first.map { String(decoding: UnsafeRawBufferPointer(rebasing: $0), as: UTF8.self) } ?? ""
    var values = ConfigurationValues()
    do {
        try values.load(tomlText: toml, source: "fuzz.toml")
        for assignment in parts.dropFirst() {
            try values.apply(assignment: String(decoding: UnsafeRawBufferPointer(rebasing: assignment), as: UTF8.self))
        }
    } catch {
        return
    }
    guard let configuration = try? HostConfiguration(values: values, catalog: ServiceCatalog.entries, environment: environment) else {
        return
    }
    // The same values, given again as `--set` assignments of their text, give the same configuration
    // (what `inetinfo --check` accepts, the host accepts on reload).
    var again = ConfigurationValues()
    for (key, entry) in values.entries {
        again.set(key, entry.value, source: "--set")
    }
    do {
        let second = try HostConfiguration(values: again, catalog: ServiceCatalog.entries, environment: environment)
        precondition(second == configuration, "the same values give another configuration")
    } catch {
        preconditionFailure("accepted values are refused the second time: \(error)")
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    exercise(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}
#else
@main
enum Replay {
    static func main() throws {
        for path in CommandLine.arguments.dropFirst() {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            data.withUnsafeBytes(exercise)
            print("ok \(path)")
        }
    }
}
#endif
