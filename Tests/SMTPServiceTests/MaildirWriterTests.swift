import Foundation
import Testing
@testable import SMTPService

/// Where messages are spooled, when Maildirs come to exist, and what a restart does with leftovers.
@Suite struct MaildirWriterTests {
    func withRoot(_ body: (String) throws -> Void) throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("maildir-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        try body(state + "/mail")
    }

    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    @Test func noMaildirExistsUntilAMessageCommits() throws {
        try withRoot { root in
            let writer = MaildirWriter(root: root, hostName: "mx.test")
            _ = try writer.recoverSpool()
            let spool = try writer.openSpool(recipients: ["bob@localhost", "carol@example.org"], uniqueName: "1.M1P0Q1.mx.test")
            spool.append(Array("Subject: x\r\n\r\nhi\r\n".utf8))
            #expect(!exists("\(root)/localhost"))
            #expect(!exists("\(root)/example.org"))
            // A transaction that ends without committing leaves nothing behind.
            spool.discard()
            #expect(try FileManager.default.contentsOfDirectory(atPath: writer.spoolDirectory).isEmpty)
            #expect(!exists("\(root)/localhost/bob"))

            let committed = try writer.openSpool(recipients: ["bob@localhost", "carol@example.org"], uniqueName: "2.M1P0Q2.mx.test")
            committed.append(Array("hi\r\n".utf8))
            try writer.commit(try committed.finish())
            for mailbox in ["\(root)/localhost/bob", "\(root)/example.org/carol"] {
                for sub in ["tmp", "new", "cur"] { #expect(exists("\(mailbox)/\(sub)")) }
                #expect(try String(contentsOfFile: "\(mailbox)/new/2.M1P0Q2.mx.test", encoding: .utf8) == "hi\r\n")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: writer.spoolDirectory).isEmpty)
            #expect(writer.mailboxExists("bob@localhost"))
            #expect(!writer.mailboxExists("mallory@localhost"))
        }
    }

    /// The state directory may not exist yet (nothing else made it): the spool and the Maildirs create it.
    @Test func aMissingStateDirectoryIsCreated() throws {
        try withRoot { root in
            let deeper = root + "/not/yet"
            let writer = MaildirWriter(root: deeper, hostName: "mx.test")
            _ = try writer.recoverSpool()
            let spool = try writer.openSpool(recipients: ["bob@localhost"], uniqueName: "5.M1P0Q5.mx.test")
            spool.append(Array("x\r\n".utf8))
            try writer.commit(try spool.finish())
            #expect(exists("\(deeper)/localhost/bob/new/5.M1P0Q5.mx.test"))
        }
    }

    /// After a power cut the disk can name one inode in the spool and in `new/` with a link count of one
    /// (the link reached the disk, the new count did not): removing the spool name would then free the
    /// delivered message. Such a leftover is kept; a leftover nothing else names is removed.
    @Test func recoveryKeepsALeftoverThatANewFolderAlsoNames() throws {
        try withRoot { root in
            let writer = MaildirWriter(root: root, hostName: "mx.test")
            _ = try writer.recoverSpool()
            let delivered = try writer.openSpool(recipients: ["bob@localhost"], uniqueName: "3.M1P0Q3.mx.test")
            delivered.append(Array("kept\r\n".utf8))
            try writer.commit(try delivered.finish())
            // The spool name is back, as a power cut before the unlink reached the disk leaves it.
            #expect(link("\(root)/localhost/bob/new/3.M1P0Q3.mx.test", "\(writer.spoolDirectory)/3.M1P0Q3.mx.test") == 0)
            let abandoned = try writer.openSpool(recipients: ["bob@localhost"], uniqueName: "4.M1P0Q4.mx.test")
            abandoned.append(Array("never acknowledged\r\n".utf8))
            _ = try abandoned.finish()  // handed over for commit, then the host died

            // The disk's count is stale: one, for two names.
            let (removed, kept) = try writer.recoverSpool(linkCount: { _ in 1 })
            #expect(removed == 1)
            #expect(kept == 1)
            let left = try FileManager.default.contentsOfDirectory(atPath: writer.spoolDirectory)
            #expect(left == ["3.M1P0Q3.mx.test"])
            #expect(try String(contentsOfFile: "\(root)/localhost/bob/new/3.M1P0Q3.mx.test", encoding: .utf8) == "kept\r\n")

            // With a count the disk has right (two), the spool name goes and the message stays.
            let (removedNow, keptNow) = try writer.recoverSpool()
            #expect(removedNow == 1 && keptNow == 0)
            #expect(try String(contentsOfFile: "\(root)/localhost/bob/new/3.M1P0Q3.mx.test", encoding: .utf8) == "kept\r\n")
        }
    }
}
