// libFuzzer target over what the host reads from a worker's figure file (written by a worker that may
// have crashed half-way or been subverted): FigureFile.parse, then the host's intake of the series into
// its registry, twice, and the exposition. Nothing may trap; a second reading of the same file adds
// nothing; only the catalog's families come out.
//
// Input: the file's first bytes (the rest of the file is zeros).
//
// Fuzz:   scripts/fuzz.sh figure-file-fuzzer [SECONDS]
// Replay: swift run figure-file-fuzzer FILE…
import Foundation
@_spi(Fuzzing) import InetinfoHost

func exercise(_ data: UnsafeRawBufferPointer) {
    FigureFileFuzzing.check(Array(data))
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
