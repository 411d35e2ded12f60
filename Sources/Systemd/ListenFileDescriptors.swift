import CSystemd
import Glibc

/// A listening socket passed by systemd socket activation, with its `FileDescriptorName=`.
public struct ListenFileDescriptor: Sendable, Equatable {
    public var fd: Int32
    public var name: String
}

public enum ListenFileDescriptors {
    /// The sockets systemd passed (`LISTEN_FDS`, `LISTEN_FDNAMES`), in order; empty outside activation.
    ///
    /// The environment is unset afterwards so that processes the host starts do not inherit a
    /// `LISTEN_PID` that is not theirs. The descriptors get `FD_CLOEXEC` for the same reason.
    public static func take() throws -> [ListenFileDescriptor] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let count = sd_listen_fds_with_names(1, &names)
        if count < 0 { throw SystemdError(operation: "sd_listen_fds_with_names", errno: -count) }
        defer {
            if let names {
                for index in 0..<Int(count) { free(names[index]) }
                free(names)
            }
        }
        var result: [ListenFileDescriptor] = []
        for index in 0..<Int(count) {
            let fd = SD_LISTEN_FDS_START + Int32(index)
            let name = names?[index].map { String(cString: $0) } ?? "unknown"
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            result.append(ListenFileDescriptor(fd: fd, name: name))
        }
        return result
    }
}
