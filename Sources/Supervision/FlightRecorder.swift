import CCrashMarker
import Glibc
import NIOConcurrencyHelpers
import Synchronization

/// What every open connection of one instance last sent, kept where it outlives the instance's process.
///
/// Contract: one file per instance (``FlightRecorderDirectory``), of a fixed size, `mmap`ed shared: a
/// header, then ``slotCount`` fixed slots of one connection each — its peer, counters, whether its input
/// is being processed right now, and the last ``inputBytes`` bytes it sent (a ring). Writing a slot
/// allocates nothing and takes no lock: a slot belongs to one connection, so to one event loop thread,
/// from ``claim(peer:)`` to ``Slot/release()``. The file survives the death of the process that wrote it,
/// so the host reads it (``FlightRecording/read(path:)``) after a worker crashed, or on its next start
/// after it died itself. A connection that finds every slot taken is not recorded (``overflowed``).
///
/// Which connection is the suspect of a failure is a matter of threads: a slot being processed holds the
/// id of the thread that processes it, and the header the id of the thread that failed — the one that
/// crashed (written by a signal handler, `CCrashMarker`, even when the process dies of it), or the one
/// that reported the failure (``freeze(failingThread:)``). The suspect is the connection that very thread
/// was processing; another thread's work at the same moment accuses no one.
///
/// After ``freeze(failingThread:)`` (the instance reported a failure) slots are no longer released or
/// claimed: the file keeps the connections that were open at the failure, while the instance closes them.
public final class FlightRecorder: @unchecked Sendable {
    public static let inputBytes = 4096
    public static let defaultSlotCount = 1024

    public let path: String
    public let slotCount: Int
    /// The mapping. Each slot's bytes are written only by the connection that holds it; the header only
    /// by `init`. Unchecked-Sendable for that reason.
    private let base: UnsafeMutableRawPointer
    private let size: Int

    private struct Slots {
        var free: [Int32]
        var frozen = false
        var overflowed = 0
    }

    // Guards which slots are free, the freeze and the overflow count: claimed and released from every
    // event loop of the instance (once per connection, never per read).
    private let slots: NIOLockedValueBox<Slots>
    /// The freeze again, readable without the lock: once frozen, a slot's processing mark stays as it was
    /// (the suspect of a failure reported from inside the processing stays the suspect).
    fileprivate let frozen = Atomic<Bool>(false)

    /// Creates (or truncates) the file and maps it.
    /// - Parameters:
    ///   - pid: the process that runs the instance; `hostPid` the host that supervises it (they differ for
    ///     a worker). A file whose host is not the running host was left behind by a host that died.
    public init(path: String, service: String, instance: Int, pid: Int32, hostPid: Int32,
                slotCount: Int = FlightRecorder.defaultSlotCount) throws(FlightRecorderError) {
        let slotCount = max(1, min(slotCount, Int(Int32.max) / FlightRecorderLayout.slotSize - 1))
        let size = FlightRecorderLayout.headerSize + slotCount * FlightRecorderLayout.slotSize
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw FlightRecorderError(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        // A sparse file: only the pages of slots that were used take memory (the runtime directory is a tmpfs).
        guard ftruncate(fd, off_t(size)) == 0 else { throw FlightRecorderError(operation: "ftruncate", path: path, errno: errno) }
        guard let mapping = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), mapping != MAP_FAILED else {
            throw FlightRecorderError(operation: "mmap", path: path, errno: errno)
        }
        self.path = path
        self.slotCount = slotCount
        self.base = mapping
        self.size = size
        // Claimed lowest first: the pages of a lightly used instance stay few.
        self.slots = NIOLockedValueBox(Slots(free: (0..<Int32(slotCount)).reversed()))
        FlightRecorderLayout.writeHeader(to: mapping, service: service, instance: instance, pid: pid, hostPid: hostPid,
                                         slotCount: slotCount, startedAtMs: FlightRecorderLayout.nowMs())
        inetinfo_crash_marker_install()
        _ = inetinfo_crash_marker_add(failingThread)
    }

    deinit {
        inetinfo_crash_marker_remove(failingThread)
        munmap(base, size)
    }

    /// Where the failing thread's id goes (the header's).
    private var failingThread: UnsafeMutablePointer<Int32> {
        (base + FlightRecorderLayout.Header.failingThread).assumingMemoryBound(to: Int32.self)
    }

    /// A slot for a new connection from `peer` (`ADDR:PORT`); `nil` when every slot is taken or the
    /// recorder is frozen.
    public func claim(peer: String) -> Slot? {
        let index = slots.withLockedValue { slots -> Int32? in
            guard !slots.frozen else { return nil }
            guard let index = slots.free.popLast() else {
                slots.overflowed += 1
                return nil
            }
            return index
        }
        guard let index else { return nil }
        let slot = Slot(recorder: self, pointer: base + FlightRecorderLayout.headerSize + Int(index) * FlightRecorderLayout.slotSize,
                        index: index)
        slot.open(peer: peer)
        return slot
    }

    /// Keeps the connections open now in the file: the instance failed and is about to close them.
    /// `failingThread`: the thread that reported the failure (its connection, if it was processing one, is
    /// the suspect).
    public func freeze(failingThread thread: Int32 = inetinfo_thread_id()) {
        slots.withLockedValue { slots in
            slots.frozen = true
            if failingThread.pointee == 0 { failingThread.pointee = thread }
        }
        frozen.store(true, ordering: .relaxed)
    }

    /// Connections that found no free slot.
    public var overflowed: Int { slots.withLockedValue { $0.overflowed } }

    fileprivate func release(_ slot: Slot) {
        slots.withLockedValue { slots in
            guard !slots.frozen else { return }
            slot.markClosed()
            slots.free.append(slot.index)
        }
    }

    /// One connection's slot. Used only from the connection's event loop.
    public final class Slot {
        private let recorder: FlightRecorder
        private let pointer: UnsafeMutableRawPointer
        fileprivate let index: Int32
        private var bytesIn: UInt64 = 0
        private var bytesOut: UInt64 = 0
        private var released = false

        fileprivate init(recorder: FlightRecorder, pointer: UnsafeMutableRawPointer, index: Int32) {
            self.recorder = recorder
            self.pointer = pointer
            self.index = index
        }

        fileprivate func open(peer: String) {
            typealias L = FlightRecorderLayout
            pointer.storeBytes(of: 0, toByteOffset: L.Slot.processing, as: UInt32.self)
            pointer.storeBytes(of: 0, toByteOffset: L.Slot.bytesIn, as: UInt64.self)
            pointer.storeBytes(of: 0, toByteOffset: L.Slot.bytesOut, as: UInt64.self)
            let now = L.nowMs()
            pointer.storeBytes(of: now, toByteOffset: L.Slot.openedAt, as: Int64.self)
            pointer.storeBytes(of: 0, toByteOffset: L.Slot.lastInputAt, as: Int64.self)
            L.writeString(peer, to: pointer + L.Slot.peer, capacity: L.Slot.peerCapacity)
            pointer.storeBytes(of: L.Slot.open, toByteOffset: L.Slot.state, as: UInt32.self)
        }

        /// Whether writes still go to the slot: not once it is released (another connection may hold it
        /// now), nor once the recorder is frozen (the file keeps the moment of the failure).
        private var writable: Bool { !released && !recorder.frozen.load(ordering: .relaxed) }

        /// Bytes the peer sent: the ring keeps the last ``FlightRecorder/inputBytes`` of them.
        public func recordInput(_ bytes: UnsafeRawBufferPointer) {
            typealias L = FlightRecorderLayout
            guard writable, !bytes.isEmpty, let source = bytes.baseAddress else { return }
            let ring = pointer + L.Slot.ring
            let capacity = FlightRecorder.inputBytes
            // Only the tail can survive in the ring.
            let count = min(bytes.count, capacity)
            let skipped = bytes.count - count
            var position = Int((bytesIn &+ UInt64(skipped)) % UInt64(capacity))
            var copied = 0
            while copied < count {
                let chunk = min(count - copied, capacity - position)
                (ring + position).copyMemory(from: source + skipped + copied, byteCount: chunk)
                copied += chunk
                position = (position + chunk) % capacity
            }
            bytesIn &+= UInt64(bytes.count)
            pointer.storeBytes(of: bytesIn, toByteOffset: L.Slot.bytesIn, as: UInt64.self)
            pointer.storeBytes(of: L.nowMs(), toByteOffset: L.Slot.lastInputAt, as: Int64.self)
        }

        public func recordOutput(byteCount: Int) {
            guard writable else { return }
            bytesOut &+= UInt64(max(0, byteCount))
            pointer.storeBytes(of: bytesOut, toByteOffset: FlightRecorderLayout.Slot.bytesOut, as: UInt64.self)
        }

        /// Brackets the processing of input: a crash of this thread in between names this connection.
        public func setProcessing(_ processing: Bool) {
            guard writable else { return }
            pointer.storeBytes(of: processing ? inetinfo_thread_id() : 0, toByteOffset: FlightRecorderLayout.Slot.processing,
                               as: Int32.self)
        }

        public func release() {
            guard !released else { return }
            released = true
            recorder.release(self)
        }

        fileprivate func markClosed() {
            pointer.storeBytes(of: FlightRecorderLayout.Slot.free, toByteOffset: FlightRecorderLayout.Slot.state, as: UInt32.self)
        }
    }
}

public struct FlightRecorderError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var path: String
    public var errno: Int32

    public var description: String { "\(operation) \(path): \(String(cString: strerror(errno)))" }
}

/// The file's layout: every offset in one place, shared by the writer and the reader. Little-endian
/// integers (the host and its workers are the same binary on the same machine).
enum FlightRecorderLayout {
    static let magic: UInt64 = 0x3130_5244_4C46_4E49  // "INFLDR01"
    static let version: UInt32 = 1
    static let headerSize = 128
    static let slotHeaderSize = 128
    static let slotSize = slotHeaderSize + FlightRecorder.inputBytes

    enum Header {
        static let magic = 0
        static let version = 8
        static let slotCount = 12
        static let slotSize = 16
        static let pid = 20
        static let hostPid = 24
        /// Int32: the thread that crashed or reported the failure; 0 while none did.
        static let failingThread = 28
        static let instance = 32
        static let startedAt = 40
        static let service = 48
        static let serviceCapacity = 64
    }

    enum Slot {
        static let state = 0
        /// Int32: the thread processing the connection's input now; 0 when none is.
        static let processing = 4
        static let bytesIn = 8
        static let bytesOut = 16
        static let openedAt = 24
        static let lastInputAt = 32
        static let peer = 40
        static let peerCapacity = 80
        static let ring = FlightRecorderLayout.slotHeaderSize

        static let free: UInt32 = 0
        static let open: UInt32 = 1
    }

    static func writeHeader(to base: UnsafeMutableRawPointer, service: String, instance: Int, pid: Int32, hostPid: Int32,
                            slotCount: Int, startedAtMs: Int64) {
        base.storeBytes(of: magic, toByteOffset: Header.magic, as: UInt64.self)
        base.storeBytes(of: version, toByteOffset: Header.version, as: UInt32.self)
        base.storeBytes(of: UInt32(truncatingIfNeeded: slotCount), toByteOffset: Header.slotCount, as: UInt32.self)
        base.storeBytes(of: UInt32(slotSize), toByteOffset: Header.slotSize, as: UInt32.self)
        base.storeBytes(of: pid, toByteOffset: Header.pid, as: Int32.self)
        base.storeBytes(of: hostPid, toByteOffset: Header.hostPid, as: Int32.self)
        base.storeBytes(of: Int64(instance), toByteOffset: Header.instance, as: Int64.self)
        base.storeBytes(of: startedAtMs, toByteOffset: Header.startedAt, as: Int64.self)
        writeString(service, to: base + Header.service, capacity: Header.serviceCapacity)
    }

    /// A length byte, then at most `capacity - 1` bytes of UTF-8.
    static func writeString(_ string: String, to pointer: UnsafeMutableRawPointer, capacity: Int) {
        let bytes = string.utf8.prefix(min(capacity - 1, 255))
        pointer.storeBytes(of: UInt8(bytes.count), as: UInt8.self)
        var offset = 1
        for byte in bytes {
            pointer.storeBytes(of: byte, toByteOffset: offset, as: UInt8.self)
            offset += 1
        }
    }

    /// Milliseconds since the epoch, from the coarse clock: a read costs no more than a few nanoseconds.
    static func nowMs() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        return Int64(now.tv_sec) &* 1000 &+ Int64(now.tv_nsec / 1_000_000)
    }
}
