/// What the `inetinfo` command line says: a config file, `--set` assignments and dedicated flags.
/// Kept so that a reload (SIGHUP, `inetinfoctl reload`) re-reads the file under the same overrides.
public struct HostOptions: Sendable {
    public var configFile: String?
    /// `--set KEY=VALUE`, in order.
    public var assignments: [String] = []
    /// Dedicated flags as key/value pairs (`--smtp-listen` is `smtp.listen`); they win over `--set`.
    public var flags: [(key: String, value: String, flag: String)] = []
    /// The binary started as `inetinfo worker` in process isolation: this very program unless a host
    /// that runs inside another program (a test) names it.
    public var workerExecutable = "/proc/self/exe"

    public init() {}

    /// Merges file, `--set` and flags, in that order of precedence (lowest first).
    public func values() throws -> ConfigurationValues {
        var values = ConfigurationValues()
        if let configFile { try values.load(tomlFile: configFile) }
        for assignment in assignments { try values.apply(assignment: assignment) }
        for flag in flags { values.set(flag.key, flag.value, source: flag.flag) }
        return values
    }
}
