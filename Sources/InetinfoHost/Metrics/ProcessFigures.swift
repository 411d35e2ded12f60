import Glibc

/// The host process's own figures, as Prometheus' `process_*` metrics define them, read from `/proc/self`
/// (which the unit's `ProcSubset=pid` keeps readable). A figure that cannot be read is `nil`, not 0.
struct ProcessFigures: Sendable {
    var cpuSeconds: Double?
    var residentBytes: Double?
    var virtualBytes: Double?
    var openDescriptors: Double?
    var maxDescriptors: Double?

    static func read() -> ProcessFigures {
        var figures = ProcessFigures()
        if let stat = Self.contents(of: "/proc/self/stat") {
            // pid (comm) state ppid …: the command may hold spaces and parentheses, so fields count from
            // the last ')'. utime and stime are fields 14 and 15, vsize 23, rss 24 (proc(5)).
            if let close = stat.lastIndex(of: UInt8(ascii: ")")) {
                let fields = stat[stat.index(after: close)...].split(separator: UInt8(ascii: " "))
                // fields[0] is the state, field 3 of the line.
                func field(_ number: Int) -> Double? {
                    let index = number - 3
                    guard index >= 0, index < fields.count else { return nil }
                    return Double(String(decoding: fields[index], as: UTF8.self))
                }
                let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
                if let user = field(14), let system = field(15), ticks > 0 { figures.cpuSeconds = (user + system) / ticks }
                figures.virtualBytes = field(23)
                if let pages = field(24) { figures.residentBytes = pages * Double(sysconf(Int32(_SC_PAGESIZE))) }
            }
        }
        if let directory = opendir("/proc/self/fd") {
            var count = 0
            while let entry = readdir(directory) {
                if entry.pointee.d_name.0 != CChar(0x2E) { count += 1 }
            }
            closedir(directory)
            // The directory's own descriptor was open while counting.
            figures.openDescriptors = Double(max(count - 1, 0))
        }
        var limit = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max {
            figures.maxDescriptors = Double(limit.rlim_cur)
        }
        return figures
    }

    /// A small /proc file's bytes (one read: these files are produced whole on read).
    private static func contents(of path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        return Array(buffer[..<count])
    }
}
