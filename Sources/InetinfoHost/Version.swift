extension InetinfoHost {
    /// The release this source tree builds (`inetinfo --version`, `inetinfo_build_info`, the Debian
    /// package's version: scripts/package-deb.sh reads it from this line).
    public static let version = "0.13.0"
}
