// libFuzzer target over the control protocol's decoding: the bytes of a connection framed into lines by
// NIO's LineBasedFrameDecoder (as ControlServer frames them), each line decoded as a ControlRequest with
// ControlJSON.decoder(), as the server does, and as a ControlReply, as inetinfoctl does. Nothing may trap;
// a request that decodes must encode and decode back to itself; every reply must encode, and what the
// server would send for a malformed line must encode too.
//
// Input: byte 0 picks the read size; the rest is what a client sends.
//
// Fuzz:   scripts/fuzz.sh control-request-fuzzer [SECONDS]
// Replay: swift run control-request-fuzzer FILE…
import Foundation
import HostControl
import NIOCore
import NIOEmbedded
import NIOExtras

let encoder = ControlJSON.encoder()
let decoder = ControlJSON.decoder()

func check(line: Data) {
    do {
        let request = try decoder.decode(ControlRequest.self, from: line)
        let encoded = try encoder.encode(request)
        precondition(!encoded.contains(0x0A), "an encoded request spans lines")
        let again = try decoder.decode(ControlRequest.self, from: encoded)
        precondition(again == request, "a request does not survive encoding: \(request) → \(again)")
    } catch let error as DecodingError {
        // What the server answers to a malformed request.
        let reply = ControlReply.failure("malformed request: \(error)")
        guard let encoded = try? encoder.encode(reply) else { preconditionFailure("the failure reply cannot be encoded") }
        precondition(!encoded.contains(0x0A), "an encoded reply spans lines")
    } catch {
        preconditionFailure("unexpected error: \(error)")
    }
    if let reply = try? decoder.decode(ControlReply.self, from: line) {
        guard let encoded = try? encoder.encode(reply) else { preconditionFailure("a decoded reply cannot be encoded: \(reply)") }
        precondition(!encoded.contains(0x0A), "an encoded reply spans lines")
        // Dates are written to the millisecond: what was written must read back.
        precondition((try? decoder.decode(ControlReply.self, from: encoded)) != nil,
                     "a reply the host could write is unreadable: \(String(decoding: encoded, as: UTF8.self))")
    }
}

func exercise(_ data: UnsafeRawBufferPointer) {
    let readSize = Int((data.first ?? 0) & 0x3F) + 1
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(LineBasedFrameDecoder()))
    var offset = data.isEmpty ? 0 : 1
    while offset < data.count {
        let end = min(offset + readSize, data.count)
        do {
            try channel.writeInbound(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: data[offset..<end])))
        } catch {
            preconditionFailure("the line decoder failed: \(error)")
        }
        offset = end
        while let line = try! channel.readInbound(as: ByteBuffer.self) {
            precondition(!line.readableBytesView.contains(0x0A), "a framed line holds a newline")
            check(line: Data(line.readableBytesView))
        }
    }
    // The decoder's leftover bytes at the end of the stream (an unterminated last line) are an error or
    // are dropped; either is fine.
    _ = try? channel.finish()
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
