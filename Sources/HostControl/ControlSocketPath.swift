/// Where the control socket is when nothing says otherwise: the one rule the host and `inetinfoctl` share.
public enum ControlSocketPath {
    /// The state directory when neither the configuration nor systemd names one.
    public static let defaultStateDirectory = "./var"

    /// `$RUNTIME_DIRECTORY/inetinfo.sock` under systemd (its first entry), else `<state-dir>/run/inetinfo.sock`.
    public static func `default`(environment: [String: String], stateDirectory: String = defaultStateDirectory) -> String {
        "\(runtimeDirectory(environment: environment, stateDirectory: stateDirectory))/inetinfo.sock"
    }

    /// The host's runtime files (control socket, flight recorders): `$RUNTIME_DIRECTORY` (its first entry)
    /// under systemd, else `<state-dir>/run`.
    public static func runtimeDirectory(environment: [String: String], stateDirectory: String = defaultStateDirectory) -> String {
        firstEntry(environment["RUNTIME_DIRECTORY"]) ?? "\(stateDirectory)/run"
    }

    /// systemd passes several directories separated by colons when a unit names several.
    public static func firstEntry(_ value: String?) -> String? {
        guard let first = value?.split(separator: ":").first, !first.isEmpty else { return nil }
        return String(first)
    }
}
