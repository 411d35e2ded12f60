// libFuzzer target over a worker's control channel (host ↔ `inetinfo worker`): the bytes one end sends,
// framed into lines by NIO's LineBasedFrameDecoder with the channel's length limit (as both ends frame
// them), each line decoded as a WorkerMessage. Nothing may trap; a line over the limit must end the
// stream with an error rather than grow the buffer; a message that decodes must survive encoding.
//
// Input: byte 0 picks the read size; the rest is what one end sends.
//
// Fuzz:   scripts/fuzz.sh worker-message-fuzzer [SECONDS]
// Replay: swift run worker-message-fuzzer FILE…
import Foundation
@_spi(Fuzzing) import InetinfoHost
import NIOCore
import NIOEmbedded
import NIOExtras

func exercise(_ data: UnsafeRawBufferPointer) {
    let readSize = Int((data.first ?? 0) & 0x3F) + 1
    let limit = WorkerMessageFuzzing.maximumLineLength
    let channel = EmbeddedChannel(handler: ByteToMessageHandler(LineBasedFrameDecoder(), maximumBufferSize: limit))
    var offset = data.isEmpty ? 0 : 1
    while offset < data.count {
        let end = min(offset + readSize, data.count)
        do {
            try channel.writeInbound(ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: data[offset..<end])))
        } catch is ByteToMessageDecoderError.PayloadTooLargeError {
            return  // the channel ends, as it does between host and worker
        } catch {
            preconditionFailure("the line decoder failed: \(error)")
        }
        offset = end
        while let line = try? channel.readInbound(as: ByteBuffer.self) {
            precondition(line.readableBytes <= limit, "a framed line is longer than the limit")
            WorkerMessageFuzzing.check(line: line.readableBytesView)
        }
    }
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
