import Foundation
import InetinfoTestKit
import NIOConcurrencyHelpers

/// Background clients for chaos and crash tests. Each runs on a thread of its own (blocking sockets must
/// not occupy the two threads of Swift's cooperative pool) until stopped.
final class LoadClients: @unchecked Sendable {
    struct Counts: Sendable {
        var httpServed = 0
        var httpFailed = 0
        var httpFailures: [String] = []
        var smtpAccepted = 0
        var smtpAttempts = 0
        var smtpRefused = 0
    }

    /// What a message's content was, by its `Message-ID`, and whether it got a 250.
    struct SentMessage: Sendable {
        var recipient: String
        var content: Data
        var acknowledged: Bool
    }

    private let stopFlag = NIOLockedValueBox(false)
    private let countsBox = NIOLockedValueBox(Counts())
    private let messagesBox = NIOLockedValueBox([String: SentMessage]())
    private var threads: [Thread] = []
    private let finished = NIOLockedValueBox(0)

    var counts: Counts { countsBox.withLockedValue { $0 } }
    var messages: [String: SentMessage] { messagesBox.withLockedValue { $0 } }
    var isStopped: Bool { stopFlag.withLockedValue { $0 } }

    /// HTTP clients that fetch `paths` in a loop and check each body against `expected`.
    func startHTTP(clients: Int, port: Int, files: [String: Data]) {
        for client in 0..<clients {
            start {
                var round = 0
                while !self.isStopped {
                    round += 1
                    let (path, expected) = files.sorted { $0.key < $1.key }[(round + client) % files.count]
                    do {
                        let response = try TCPTestSocket.httpGet(port: port, path: path)
                        guard response.status == 200, response.body == expected else {
                            throw TestHostError("GET \(path): status \(response.status), \(response.body.count) bytes")
                        }
                        self.countsBox.withLockedValue { $0.httpServed += 1 }
                    } catch {
                        self.countsBox.withLockedValue {
                            $0.httpFailed += 1
                            if $0.httpFailures.count < 10 { $0.httpFailures.append("\(error)") }
                        }
                    }
                }
            }
        }
    }

    /// SMTP clients that deliver messages in a loop, alternating DATA and BDAT, reconnecting whenever
    /// the service drops them. Every message has a unique Message-ID and content.
    func startSMTP(clients: Int, port: @escaping @Sendable () -> Int?, tag: String, size: Int = 2048) {
        for client in 0..<clients {
            start {
                var sequence = 0
                while !self.isStopped {
                    guard let port = port(), let connection = try? SMTPTestClient(port: port, timeoutSeconds: 5) else {
                        Thread.sleep(forTimeInterval: 0.01)
                        continue
                    }
                    guard (try? connection.code()) == "220", (try? connection.exchange("EHLO load.test\r\n")) == ["250"] else {
                        continue
                    }
                    while !self.isStopped {
                        sequence += 1
                        let id = "\(tag)-\(client)-\(sequence)"
                        let recipient = "user\(sequence % 4)@localhost"
                        let content = Self.message(id: id, size: size)
                        self.messagesBox.withLockedValue { $0[id] = SentMessage(recipient: recipient, content: content, acknowledged: false) }
                        self.countsBox.withLockedValue { $0.smtpAttempts += 1 }
                        let reply = try? connection.sendMessage(from: "load@remote.test", to: [recipient], content: content,
                                                                useBDAT: sequence % 2 == 0)
                        if let reply, reply.hasPrefix("250") {
                            self.messagesBox.withLockedValue { $0[id]?.acknowledged = true }
                            self.countsBox.withLockedValue { $0.smtpAccepted += 1 }
                        } else {
                            if reply != nil { self.countsBox.withLockedValue { $0.smtpRefused += 1 } }
                            break  // reconnect: the session may be gone or out of sync
                        }
                    }
                }
            }
        }
    }

    /// Content that is easy to check: headers with the id, then lines of varied printable text.
    static func message(id: String, size: Int) -> Data {
        var text = "Message-ID: <\(id)@load.test>\r\nSubject: \(id)\r\n\r\n"
        var line = 0
        while text.utf8.count < size {
            line += 1
            let dot = line % 7 == 0 ? "." : ""  // leading dots exercise DATA stuffing
            text += "\(dot)\(id) line \(line) " + String(repeating: Character(UnicodeScalar(UInt8(65 + line % 26))), count: line % 60) + "\r\n"
        }
        return Data(text.utf8)
    }

    private func start(_ body: @escaping @Sendable () -> Void) {
        let thread = Thread { [finished] in
            body()
            finished.withLockedValue { $0 += 1 }
        }
        thread.stackSize = 1 << 20
        threads.append(thread)
        thread.start()
    }

    /// Stops every client and waits (up to 30 s) for their threads to end.
    func stop() async {
        stopFlag.withLockedValue { $0 = true }
        let total = threads.count
        _ = try? await Deadline.eventually("load clients to stop", timeout: .seconds(30)) {
            finished.withLockedValue { $0 } == total ? true : nil
        }
    }
}

/// Checks the Maildirs against what the clients sent: every acknowledged message exactly once and
/// byte-identical, and nothing in `new/` that is not a whole message some client sent.
struct MailAudit: CustomStringConvertible {
    var acknowledged = 0
    var found = 0
    var missing: [String] = []
    var duplicated: [String] = []
    var corrupt: [String] = []
    var unacknowledgedButDelivered = 0

    init(host: TestHost, sent: [String: LoadClients.SentMessage]) {
        var delivered: [String: Int] = [:]
        for mailbox in host.mailboxes() {
            for message in host.deliveredMessages(to: mailbox) {
                found += 1
                let body = message.body
                let id = Self.messageID(in: body)
                guard let id, let original = sent[id], original.content == body else {
                    corrupt.append(message.path)
                    continue
                }
                delivered[id, default: 0] += 1
            }
        }
        for (id, message) in sent {
            let copies = delivered[id] ?? 0
            if message.acknowledged {
                acknowledged += 1
                if copies == 0 { missing.append(id) }
            } else if copies > 0 {
                unacknowledgedButDelivered += 1
            }
            if copies > 1 { duplicated.append(id) }
        }
    }

    var isClean: Bool { missing.isEmpty && duplicated.isEmpty && corrupt.isEmpty }

    var description: String {
        "\(acknowledged) acknowledged, \(found) files in new/, missing \(missing.count), duplicated \(duplicated.count), corrupt \(corrupt.count), delivered without 250 \(unacknowledgedButDelivered)"
            + (missing.isEmpty ? "" : " missing: \(missing.prefix(5))") + (corrupt.isEmpty ? "" : " corrupt: \(corrupt.prefix(3))")
    }

    static func messageID(in body: Data) -> String? {
        let prefix = Array("Message-ID: <".utf8)
        let bytes = [UInt8](body.prefix(200))
        guard bytes.starts(with: prefix), let end = bytes.firstIndex(of: UInt8(ascii: "@")) else { return nil }
        return String(decoding: bytes[prefix.count..<end], as: UTF8.self)
    }
}
