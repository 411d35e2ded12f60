import CProcessControl
import CoreMetrics
import Glibc
import NIOConcurrencyHelpers

/// The metrics backend of a worker process: each series the instance makes (through swift-metrics) gets a
/// slot of the ``FigureFile`` the host created for this worker, and every count is an atomic add in it.
/// The host reads the file whenever it wants the figures, including after this process has died.
final class FigureRecorder: MetricsFactory {
    /// The file's mapping; kept for the life of the process.
    private let base: SharedBytes

    private struct State {
        var slots: [[UInt8]: Int] = [:]
        var next = 0
        var full = false
    }

    // Guards the slot table: instances make their metrics once each, from any thread.
    private let state = NIOLockedValueBox(State())

    init(path: String) throws(FigureFileError) {
        let fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { throw FigureFileError(operation: "open", path: path, errno: errno) }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_size == off_t(FigureFile.size) else {
            throw FigureFileError(operation: "fstat", path: path, errno: EINVAL)
        }
        guard let mapping = mmap(nil, FigureFile.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), mapping != MAP_FAILED else {
            throw FigureFileError(operation: "mmap", path: path, errno: errno)
        }
        base = SharedBytes(pointer: mapping)
    }

    /// The slot of a series (the same one every time it is made again), or `nil` when the file is full.
    private func slot(_ kind: FigureFile.Kind, _ label: String, _ dimensions: [(String, String)]) -> UnsafeMutableRawPointer? {
        let key = FigureFile.key(label, dimensions)
        guard key.count <= FigureFile.keyCapacity else { return nil }
        let index = state.withLockedValue { state -> Int? in
            if let existing = state.slots[key] { return existing }
            guard state.next < FigureFile.slotCount else { return nil }
            defer { state.next += 1 }
            let slot = base.pointer + FigureFile.headerSize + state.next * FigureFile.slotSize
            key.withUnsafeBytes { (slot + 8).copyMemory(from: $0.baseAddress!, byteCount: key.count) }
            slot.storeBytes(of: UInt32(key.count), toByteOffset: 4, as: UInt32.self)
            // Last, and with release order: a reader that sees the kind sees the key.
            inetinfo_atomic_store_release_u32(slot.assumingMemoryBound(to: UInt32.self), kind.rawValue)
            state.slots[key] = state.next
            return state.next
        }
        return index.map { base.pointer + FigureFile.headerSize + $0 * FigureFile.slotSize }
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        guard let slot = slot(.counter, label, dimensions) else {
            return NOOPMetricsHandler.instance.makeCounter(label: label, dimensions: dimensions)
        }
        return SharedCounter(value: slot + FigureFile.valueOffset)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        guard let slot = slot(.gauge, label, dimensions) else {
            return NOOPMetricsHandler.instance.makeMeter(label: label, dimensions: dimensions)
        }
        return SharedGauge(value: slot + FigureFile.valueOffset)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        guard let slot = slot(.histogram, label, dimensions) else {
            return NOOPMetricsHandler.instance.makeTimer(label: label, dimensions: dimensions)
        }
        return SharedHistogram(slot: slot)
    }

    // The services count with counters, meters and timers only; the rest are kept nowhere.
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        NOOPMetricsHandler.instance.makeFloatingPointCounter(label: label, dimensions: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        NOOPMetricsHandler.instance.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }

    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyMeter(_ handler: any MeterHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}
}

/// Memory shared with the host; every access to it goes through the atomic operations of CProcessControl.
private struct SharedBytes: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
}

private final class SharedCounter: CounterHandler, @unchecked Sendable {
    private let value: UnsafeMutablePointer<UInt64>

    init(value: UnsafeMutableRawPointer) { self.value = value.assumingMemoryBound(to: UInt64.self) }

    func increment(by amount: Int64) {
        guard amount > 0 else { return }
        inetinfo_atomic_add_u64(value, UInt64(amount))
    }

    func reset() {}
}

private final class SharedGauge: MeterHandler, @unchecked Sendable {
    private let value: UnsafeMutablePointer<UInt64>

    init(value: UnsafeMutableRawPointer) { self.value = value.assumingMemoryBound(to: UInt64.self) }

    func set(_ value: Int64) { set(Double(value)) }
    func set(_ value: Double) { inetinfo_atomic_store_u64(self.value, (value.isFinite ? value : 0).bitPattern) }
    func increment(by amount: Double) { if amount.isFinite { inetinfo_atomic_add_double(value, amount) } }
    func decrement(by amount: Double) { if amount.isFinite { inetinfo_atomic_add_double(value, -amount) } }
}

private final class SharedHistogram: TimerHandler, @unchecked Sendable {
    /// Upper bounds of the buckets; one more bucket holds everything beyond the last.
    private static let bounds = MetricCatalog.durationBoundsNanoseconds

    private let counts: UnsafeMutablePointer<UInt64>
    private let sums: UnsafeMutablePointer<UInt64>

    init(slot: UnsafeMutableRawPointer) {
        counts = (slot + FigureFile.countsOffset).assumingMemoryBound(to: UInt64.self)
        sums = (slot + FigureFile.sumsOffset).assumingMemoryBound(to: UInt64.self)
    }

    func recordNanoseconds(_ duration: Int64) {
        let duration = max(duration, 0)
        let bucket = Self.bounds.firstIndex { duration <= $0 } ?? Self.bounds.count
        inetinfo_atomic_add_u64(counts + bucket, 1)
        inetinfo_atomic_add_u64(sums + bucket, UInt64(duration))
    }
}
