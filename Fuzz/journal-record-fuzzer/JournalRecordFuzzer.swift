// libFuzzer target over what a replay reads from the SMTP journal (a file a power cut may have torn, or a
// lap of the ring left behind): the checkpoint slots and a record's header and metadata. Nothing may trap;
// what is accepted round-trips and names only paths below the mail root.
//
// Input: a journal head, or a record (header, metadata, content).
//
// Fuzz:   scripts/fuzz.sh journal-record-fuzzer [SECONDS]
// Replay: swift run journal-record-fuzzer FILE…
import Foundation
@_spi(Fuzzing) import SMTPService

func exercise(_ data: UnsafeRawBufferPointer) {
    JournalFuzzing.check(Array(data))
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
