// libFuzzer target over what the host reads back after a crash: a flight recorder's file (written by a
// worker that may have crashed half-way or been subverted) parsed by FlightRecording.parse, and each
// connection's input rendered by CrashPresenter for `inetinfoctl crashes show`. Nothing may trap; every
// connection keeps at most 4 KiB of input, never more than it counted; the rendering is printable ASCII.
//
// Input: the file's bytes.
//
// Fuzz:   scripts/fuzz.sh flight-recording-fuzzer [SECONDS]
// Replay: swift run flight-recording-fuzzer FILE…
import Foundation
import HostControl
import Supervision

func exercise(_ data: UnsafeRawBufferPointer) {
    guard let recording = FlightRecording.parse(Data(data)) else { return }
    for connection in recording.connections {
        precondition(connection.lastInput.count <= FlightRecorder.inputBytes, "more input kept than a slot holds")
        precondition(UInt64(connection.lastInput.count) <= connection.bytesIn, "more input kept than was counted")
        for line in CrashPresenter.escapedLines(Data(connection.lastInput)) {
            precondition(line.utf8.allSatisfy { (0x20...0x7E).contains($0) }, "rendered input is not printable: \(line)")
        }
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
