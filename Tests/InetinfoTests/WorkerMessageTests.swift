import Foundation
@_spi(Fuzzing) import InetinfoHost
import Testing

/// The worker channel's fuzzer corpus means something only if its seeds are messages of the protocol.
@Test func theWorkerMessageSeedsAreMessagesOfTheProtocol() throws {
    let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fuzz/corpus/worker-message")
    var decoded = 0
    for name in ["ready-pong", "failed", "host-commands", "start"] {
        let data = try Data(contentsOf: corpus.appendingPathComponent(name))
        // Byte 0 is the fuzzer's read size; the rest are lines.
        for line in data.dropFirst().split(separator: 0x0A) {
            #expect(WorkerMessageFuzzing.decodes(line: line), "\(name): \(String(decoding: line, as: UTF8.self))")
            WorkerMessageFuzzing.check(line: line)
            decoded += 1
        }
    }
    #expect(decoded == 9)
    let malformed = try Data(contentsOf: corpus.appendingPathComponent("malformed")).dropFirst().split(separator: 0x0A)
    // Only the pong for a ping never sent is well-formed (the protocol, not the decoder, refuses it).
    let wellFormed = malformed.filter { WorkerMessageFuzzing.decodes(line: $0) }.map { String(decoding: $0, as: UTF8.self) }
    #expect(wellFormed == [#"{"pong":{"_0":-1}}"#])
}
