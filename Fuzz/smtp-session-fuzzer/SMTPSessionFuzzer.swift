// libFuzzer target over the SMTP protocol engine (SMTPSession): any byte sequence, cut into reads at
// positions chosen by the input, must never trap, must keep the engine's invariants, and must answer.
//
// Fuzz:   scripts/fuzz-smtp.sh [SECONDS]        (builds with -DFUZZING, --sanitize fuzzer,address)
// Replay: swift run smtp-session-fuzzer FILE…   (a normal build: runs the same check on each file)
import NIOCore
import SMTPService

func exercise(_ data: UnsafeRawBufferPointer) {
    var options = SMTPSession.Options(hostName: "fuzz.test", domains: ["localhost"])
    options.limits.maxMessageSize = 4096
    // The first byte picks the replay mode and the read size, so both paths are explored.
    options.simulateMS02012 = (data.first ?? 0) & 0x80 != 0
    let readSize = Int((data.first ?? 0) & 0x3F) + 1
    var session = SMTPSession(options: options)
    var spooling = false
    var offset = data.isEmpty ? 0 : 1
    while offset < data.count, !session.isClosed {
        let end = min(offset + readSize, data.count)
        var buffer = ByteBuffer(bytes: data[offset..<end])
        offset = end
        var rounds = 0
        repeat {
            rounds += 1
            precondition(rounds < 10_000, "engine made no progress")
            let before = buffer.readableBytes
            for action in session.receive(&buffer) {
                switch action {
                case .startMessage: spooling = true
                case .messageData: precondition(spooling, "message data outside a message")
                case .discardMessage, .commitMessage: spooling = false
                case .reply(let text): precondition(text.utf8.count < 2048 && text.first!.isNumber, "bad reply \(text)")
                case .close, .simulatedFailure: break
                }
            }
            if session.isAwaitingDelivery {
                _ = session.deliveryFinished(rounds % 2 == 0 ? .delivered(id: "X") : .failed)
            } else {
                precondition(buffer.readableBytes == 0 || session.isClosed || buffer.readableBytes < before,
                             "input left unconsumed")
                if buffer.readableBytes == before { break }
            }
        } while buffer.readableBytes > 0 && !session.isClosed
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    exercise(UnsafeRawBufferPointer(start: start, count: count))
    return 0
}
#else
import Foundation

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
