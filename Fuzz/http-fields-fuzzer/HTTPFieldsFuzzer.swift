// libFuzzer target over the HTTP service's field parsers alone: HTTPDate.parse, ByteRange.parse and the
// conditional-request rules of Validators, on arbitrary text and file sizes. None may trap, and each must
// agree with its counterpart: a date it formats parses back, a satisfiable range lies inside the file, a
// file's own validators always match it.
//
// Input: byte 0 picks the file size (0, 1, small, 100 KiB, huge, or the next 8 bytes), the next 8 bytes
// the modification time; the rest is text, one field per line. Each line is tried as a date, as a Range
// header, and as a `Name: value` header of the request the validators judge.
//
// Fuzz:   scripts/fuzz.sh http-fields-fuzzer [SECONDS]
// Replay: swift run http-fields-fuzzer FILE…
import Foundation
import NIOHTTP1
@_spi(Fuzzing) import HTTPService

/// IMF-fixdate writes four-digit years only from 1000 to 9999: the range in which a formatted date must
/// parse back to itself.
let formattable = -30_610_224_000...253_402_300_799

func loadInteger(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Int {
    var value: UInt64 = 0
    for index in 0..<8 where offset + index < bytes.count {
        value |= UInt64(bytes[offset + index]) << (8 * UInt64(index))
    }
    return Int(truncatingIfNeeded: value)
}

func exercise(_ data: UnsafeRawBufferPointer) {
    let selector = data.first ?? 0
    let raw = loadInteger(data, at: 1)
    let size: Int
    switch selector % 8 {
    case 0: size = 0
    case 1: size = 1
    case 2: size = 6
    case 3: size = 100 * 1024
    case 4: size = Int.max
    case 5: size = Int.max - 1
    case 6: size = raw & 0xFFFF
    default: size = raw & Int.max
    }
    // The modification time: the bytes as they are, or a plausible one.
    let modified = selector & 0x80 != 0 ? raw : 784_111_777 + (raw & 0x3FFF_FFFF)
    let nanoseconds = Int(selector >> 3 & 0x0F) * 61_000_017
    let text = String(decoding: data.count > 9 ? UnsafeRawBufferPointer(rebasing: data[9...]) : UnsafeRawBufferPointer(rebasing: data[0..<0]),
                      as: UTF8.self)

    var headers = HTTPHeaders()
    for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
        if let seconds = HTTPFuzzing.parseDate(line), formattable.contains(seconds) {
            let formatted = HTTPFuzzing.formatDate(seconds: seconds)
            precondition(HTTPFuzzing.parseDate(formatted) == seconds, "\(line) parses to \(seconds), formatted \(formatted), which parses differently")
        }
        switch HTTPFuzzing.parseRange(line, size: size) {
        case .satisfiable(let range):
            precondition(range.lowerBound >= 0 && range.lowerBound < range.upperBound && range.upperBound <= size,
                         "\(line) gives \(range) for a \(size)-byte file")
        case .unsatisfiable, .ignored:
            break
        }
        // NIO's parser passes on only ASCII names (HTTPHeaders traps on others).
        if let colon = line.firstIndex(of: ":"), line[..<colon].utf8.allSatisfy({ $0 < 0x80 }) {
            headers.add(name: String(line[..<colon]), value: String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
    }
    let result = HTTPFuzzing.validatorsCheck(size: size, modifiedSeconds: modified, modifiedNanoseconds: nanoseconds, headers: headers)
    precondition(result.etag.hasPrefix("\"") && result.etag.hasSuffix("\""), "bad entity tag \(result.etag)")

    // The file's own validators always match it.
    let own = HTTPFuzzing.validatorsCheck(size: size, modifiedSeconds: modified, modifiedNanoseconds: nanoseconds,
                                          headers: HTTPHeaders([("If-None-Match", result.etag), ("If-Range", result.etag)]))
    precondition(own.notModified && own.rangeApplies, "a file's own entity tag does not match it")
    let weak = HTTPFuzzing.validatorsCheck(size: size, modifiedSeconds: modified, modifiedNanoseconds: nanoseconds,
                                           headers: HTTPHeaders([("If-None-Match", "W/" + result.etag), ("If-Range", "W/" + result.etag)]))
    precondition(weak.notModified && !weak.rangeApplies, "weak comparison for If-None-Match, strong for If-Range")
    let matching = HTTPFuzzing.validatorsCheck(size: size, modifiedSeconds: modified, modifiedNanoseconds: nanoseconds,
                                               headers: HTTPHeaders([("If-Match", result.etag)]))
    precondition(!matching.preconditionFailed && !matching.notModified, "If-Match with the file's own entity tag fails")
    let weakMatch = HTTPFuzzing.validatorsCheck(size: size, modifiedSeconds: modified, modifiedNanoseconds: nanoseconds,
                                                headers: HTTPHeaders([("If-Match", "W/" + result.etag)]))
    precondition(weakMatch.preconditionFailed, "If-Match compares strongly: a weak tag never matches")
    if formattable.contains(modified) {
        let date = HTTPFuzzing.formatDate(seconds: modified)
        let byDate = HTTPFuzzing.validatorsCheck(size: size, modifiedSeconds: modified, modifiedNanoseconds: nanoseconds,
                                                 headers: HTTPHeaders([("If-Modified-Since", date), ("If-Range", date),
                                                                       ("If-Unmodified-Since", date)]))
        precondition(byDate.notModified && !byDate.preconditionFailed && byDate.rangeApplies,
                     "a file's own Last-Modified does not match it: \(date)")
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
