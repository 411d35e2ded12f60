import Glibc

/// Which addresses the admin listener may use without `admin.allow-remote`.
enum AdminAddress {
    /// 127.0.0.0/8, ::1, `localhost`, and IPv4-mapped loopback (`::ffff:127.0.0.1`).
    static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        let bytes = withUnsafeBytes(of: v6) { Array($0) }
        if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return true }
        let mapped = bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10] == 0xFF && bytes[11] == 0xFF
        return mapped && bytes[12] == 127
    }

    /// `127.0.0.1:9464` or `[::1]:9464` → whether its host part is loopback.
    static func isLoopback(endpoint: String) -> Bool {
        guard let colon = endpoint.lastIndex(of: ":") else { return false }
        var host = String(endpoint[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return isLoopback(host)
    }
}
