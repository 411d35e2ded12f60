import Foundation
import Glibc

/// A flight recorder's file as read back by the host: the instance it belonged to and its open connections.
///
/// The file may have been written by a process that crashed half-way, or by a worker that was subverted:
/// ``parse(_:)`` checks every size against the file and takes nothing on trust (a bad header is `nil`,
/// a bad slot is skipped, counters are taken as they are, text is decoded lossily).
public struct FlightRecording: Sendable, Equatable {
    public struct Connection: Sendable, Equatable {
        /// `ADDR:PORT` (`[ADDR]:PORT` for IPv6).
        public var peer: String
        /// The thread processing its input when the recording was read (or when the writer died); 0: none.
        public var processingThread: Int32
        public var processing: Bool { processingThread != 0 }
        public var bytesIn: UInt64
        public var bytesOut: UInt64
        public var openedAt: Date
        public var lastInputAt: Date?
        /// The last bytes it sent, oldest first (at most ``FlightRecorder/inputBytes``).
        public var lastInput: [UInt8]
    }

    public var service: String
    public var instance: Int
    public var pid: Int32
    public var hostPid: Int32
    public var startedAt: Date
    /// The thread that crashed or reported the failure; `nil` when none did (a hang, a kill from outside).
    public var failingThread: Int32?
    public var connections: [Connection]

    /// The connection whose input the failing thread was processing: the likely cause of the failure.
    public var suspect: Connection? {
        guard let failingThread else { return nil }
        return connections.first { $0.processingThread == failingThread }
    }

    /// The most of a file that is read: the largest recorder this host makes, with room to spare. A file
    /// made larger (by a subverted worker) is read no further.
    public static let maximumFileSize = FlightRecorderLayout.headerSize + 4 * FlightRecorder.defaultSlotCount * FlightRecorderLayout.slotSize

    /// Reads the file at `path` (not through a symbolic link); `nil` if there is none or it is not a flight
    /// recorder's.
    public static func read(path: String) -> FlightRecording? {
        // Non-blocking: a FIFO put in the file's place must not block the host.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_uid == geteuid() else { return nil }
        var data = Data(count: min(maximumFileSize, max(0, Int(status.st_size))))
        let count = data.withUnsafeMutableBytes { buffer -> Int in
            var total = 0
            while total < buffer.count {
                let got = Glibc.read(fd, buffer.baseAddress! + total, buffer.count - total)
                if got < 0 && errno == EINTR { continue }
                guard got > 0 else { break }
                total += got
            }
            return total
        }
        return parse(data.prefix(count))
    }

    public static func parse(_ data: Data) -> FlightRecording? {
        typealias L = FlightRecorderLayout
        return data.withUnsafeBytes { (file: UnsafeRawBufferPointer) -> FlightRecording? in
            func load<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T? {
                guard offset >= 0, offset <= file.count - MemoryLayout<T>.size else { return nil }
                return file.loadUnaligned(fromByteOffset: offset, as: T.self)
            }
            func string(_ offset: Int, capacity: Int) -> String {
                guard let length = load(offset, UInt8.self) else { return "" }
                let count = min(Int(length), capacity - 1, max(0, file.count - offset - 1))
                return String(decoding: file[(offset + 1)..<(offset + 1 + count)], as: UTF8.self)
            }
            // Between 1970 and 9999: whatever the file says, a date that every formatter can print.
            func date(_ milliseconds: Int64) -> Date {
                Date(timeIntervalSince1970: Double(min(max(milliseconds, 0), 253_402_300_799_000)) / 1000)
            }

            guard file.count >= L.headerSize, load(L.Header.magic, UInt64.self) == L.magic,
                  load(L.Header.version, UInt32.self) == L.version,
                  load(L.Header.slotSize, UInt32.self) == UInt32(L.slotSize),
                  let declaredSlots = load(L.Header.slotCount, UInt32.self)
            else { return nil }
            // A truncated file keeps the slots it still has.
            let slotCount = min(Int(declaredSlots), (file.count - L.headerSize) / L.slotSize)
            var connections: [Connection] = []
            for index in 0..<slotCount {
                let slot = L.headerSize + index * L.slotSize
                guard load(slot + L.Slot.state, UInt32.self) == L.Slot.open,
                      let bytesIn = load(slot + L.Slot.bytesIn, UInt64.self),
                      let bytesOut = load(slot + L.Slot.bytesOut, UInt64.self),
                      let openedAt = load(slot + L.Slot.openedAt, Int64.self),
                      let lastInputAt = load(slot + L.Slot.lastInputAt, Int64.self)
                else { continue }
                let capacity = UInt64(FlightRecorder.inputBytes)
                let kept = Int(min(bytesIn, capacity))
                let start = Int((bytesIn &- UInt64(kept)) % capacity)
                let ring = file[(slot + L.Slot.ring)..<(slot + L.Slot.ring + FlightRecorder.inputBytes)]
                var input = [UInt8]()
                input.reserveCapacity(kept)
                let firstPart = min(kept, FlightRecorder.inputBytes - start)
                input.append(contentsOf: ring.dropFirst(start).prefix(firstPart))
                input.append(contentsOf: ring.prefix(kept - firstPart))
                connections.append(Connection(
                    peer: string(slot + L.Slot.peer, capacity: L.Slot.peerCapacity),
                    processingThread: load(slot + L.Slot.processing, Int32.self) ?? 0,
                    bytesIn: bytesIn, bytesOut: bytesOut, openedAt: date(openedAt),
                    lastInputAt: lastInputAt == 0 ? nil : date(lastInputAt), lastInput: input))
            }
            return FlightRecording(
                service: string(L.Header.service, capacity: L.Header.serviceCapacity),
                instance: Int(load(L.Header.instance, Int64.self) ?? 0),
                pid: load(L.Header.pid, Int32.self) ?? 0,
                hostPid: load(L.Header.hostPid, Int32.self) ?? 0,
                startedAt: date(load(L.Header.startedAt, Int64.self) ?? 0),
                failingThread: load(L.Header.failingThread, Int32.self).flatMap { $0 == 0 ? nil : $0 },
                connections: connections)
        }
    }
}

/// Where the flight recorders of a host's instances are: `<directory>/<service>.<instance>.flight`.
public struct FlightRecorderDirectory: Sendable, Equatable {
    public var path: String

    public init(path: String) {
        self.path = path
    }

    public func file(service: String, instance: Int) -> String {
        "\(path)/\(service).\(instance).flight"
    }

    /// Creates the directory (and its parents) if needed.
    public func create() throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
    }

    /// Every flight recorder file in the directory.
    public func files() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasSuffix(".flight") }.sorted().map { "\(path)/\($0)" }
    }
}
