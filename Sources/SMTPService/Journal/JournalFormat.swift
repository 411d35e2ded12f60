import CJournal

/// The byte layout of the SMTP write-ahead journal (``MailJournal``): pure encoding and checked decoding,
/// no I/O. Everything read back is treated as untrusted — a record may be torn by a power cut, or left from
/// an earlier lap of the ring — and is accepted only whole, with both CRCs right.
///
/// The file: a 4 KiB head holding two checkpoint slots (written alternately, so that a torn slot write
/// leaves the other), then the data area, a ring of records. All integers little-endian.
///
///     checkpoint slot (64 bytes, at 0 and at 512)
///      0  4  magic "IJC1"
///      4  4  zero
///      8  8  epoch: records of this epoch after the checkpoint are to be replayed
///     16  8  the sequence number the next record carries
///     24  8  the file offset where it starts
///     32  8  the file's size when the slot was written
///     40  4  CRC-32C of bytes 0..<40
///
///     record
///      0  4  magic "IJR1"
///      4  4  kind: 1 message, 2 wrap (the next record starts at the beginning of the data area)
///      8  8  epoch
///     16  8  sequence number, one more than the previous record's
///     24  4  metadata length M (≤ 64 KiB)
///     28  4  zero
///     32  8  content length C
///     40  4  CRC-32C of the content
///     44  4  CRC-32C of bytes 0..<44 and the metadata
///     48  M  metadata: u16 length + Maildir file name, u16 count, then per recipient Maildir
///            u16 length + path relative to the mail root (`domain/local-part`)
///   48+M  C  the message as it goes into `new/`
///            then zeros to a multiple of 8
enum JournalFormat {
    static let headSize = 4096
    static let slotOffsets = [0, 512]
    static let slotSize = 44
    static let recordHeaderSize = 48
    static let maxMetadata = 65_536
    static let checkpointMagic: UInt32 = 0x3143_4A49 // "IJC1"
    static let recordMagic: UInt32 = 0x3152_4A49 // "IJR1"

    enum Kind: UInt32 {
        case message = 1
        case wrap = 2
    }

    struct Checkpoint: Equatable {
        var epoch: UInt64
        var nextSequence: UInt64
        var offset: UInt64
        var fileSize: UInt64
    }

    struct RecordHeader: Equatable {
        var kind: Kind
        var epoch: UInt64
        var sequence: UInt64
        var metadataLength: Int
        var contentLength: UInt64
        var contentCRC: UInt32
        var headerCRC: UInt32

        /// The record's length in the file, padding included; nil if it cannot fit any file.
        var storedLength: UInt64? {
            let (sum, overflow) = UInt64(JournalFormat.recordHeaderSize + metadataLength).addingReportingOverflow(contentLength)
            guard !overflow, sum <= UInt64.max - 8 else { return nil }
            return (sum + 7) & ~7
        }
    }

    /// Where a message goes: its Maildir file name and its recipients' Maildirs, relative to the mail root.
    struct Metadata: Equatable {
        var name: String
        var mailboxes: [String]
    }

    static func crc(_ bytes: some Collection<UInt8>, continuing crc: UInt32 = 0) -> UInt32 {
        bytes.withContiguousStorageIfAvailable { inetinfo_crc32c(crc, $0.baseAddress, $0.count) }
            ?? Array(bytes).withUnsafeBufferPointer { inetinfo_crc32c(crc, $0.baseAddress, $0.count) }
    }

    // MARK: Checkpoint slots

    static func encode(_ checkpoint: Checkpoint) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(slotSize)
        append(checkpointMagic, to: &bytes)
        append(UInt32(0), to: &bytes)
        append(checkpoint.epoch, to: &bytes)
        append(checkpoint.nextSequence, to: &bytes)
        append(checkpoint.offset, to: &bytes)
        append(checkpoint.fileSize, to: &bytes)
        append(crc(bytes), to: &bytes)
        return bytes
    }

    static func decodeCheckpoint(_ bytes: ArraySlice<UInt8>) -> Checkpoint? {
        guard bytes.count >= slotSize,
              integer(UInt32.self, bytes, at: 0) == checkpointMagic,
              integer(UInt32.self, bytes, at: 40) == crc(bytes.prefix(40))
        else { return nil }
        let checkpoint = Checkpoint(epoch: integer(UInt64.self, bytes, at: 8), nextSequence: integer(UInt64.self, bytes, at: 16),
                                    offset: integer(UInt64.self, bytes, at: 24), fileSize: integer(UInt64.self, bytes, at: 32))
        // The offset must name a place in the data area of the file the slot describes; sequence numbers
        // start at 1 and stay far from the top (the journal subtracts one, the replay adds one per record).
        guard checkpoint.fileSize > UInt64(headSize), checkpoint.offset >= UInt64(headSize),
              checkpoint.offset < checkpoint.fileSize, checkpoint.nextSequence >= 1, checkpoint.nextSequence < 1 << 62
        else { return nil }
        return checkpoint
    }

    /// The newer of the valid slots in the file's head (the one with the higher epoch, then sequence).
    static func latestCheckpoint(in head: [UInt8]) -> Checkpoint? {
        slotOffsets.compactMap { offset -> Checkpoint? in
            guard head.count >= offset + slotSize else { return nil }
            return decodeCheckpoint(head[offset..<(offset + slotSize)])
        }.max { ($0.epoch, $0.nextSequence) < ($1.epoch, $1.nextSequence) }
    }

    // MARK: Records

    /// The header and metadata of a record (the content follows them in the file).
    static func encodeRecordHead(kind: Kind, epoch: UInt64, sequence: UInt64, metadata: Metadata?, contentLength: UInt64,
                                 contentCRC: UInt32) -> [UInt8] {
        let meta = metadata.map(encode) ?? []
        var bytes: [UInt8] = []
        bytes.reserveCapacity(recordHeaderSize + meta.count)
        append(recordMagic, to: &bytes)
        append(kind.rawValue, to: &bytes)
        append(epoch, to: &bytes)
        append(sequence, to: &bytes)
        append(UInt32(meta.count), to: &bytes)
        append(UInt32(0), to: &bytes)
        append(contentLength, to: &bytes)
        append(contentCRC, to: &bytes)
        append(crc(meta, continuing: crc(bytes)), to: &bytes)
        bytes += meta
        return bytes
    }

    /// A record header, if its fixed fields are sane; its CRC is checked with the metadata (``decodeMetadata``).
    static func decodeRecordHeader(_ bytes: ArraySlice<UInt8>) -> RecordHeader? {
        guard bytes.count >= recordHeaderSize, integer(UInt32.self, bytes, at: 0) == recordMagic,
              let kind = Kind(rawValue: integer(UInt32.self, bytes, at: 4)),
              integer(UInt32.self, bytes, at: 28) == 0
        else { return nil }
        let metadataLength = integer(UInt32.self, bytes, at: 24)
        guard metadataLength <= UInt32(maxMetadata) else { return nil }
        let header = RecordHeader(kind: kind, epoch: integer(UInt64.self, bytes, at: 8), sequence: integer(UInt64.self, bytes, at: 16),
                                  metadataLength: Int(metadataLength), contentLength: integer(UInt64.self, bytes, at: 32),
                                  contentCRC: integer(UInt32.self, bytes, at: 40), headerCRC: integer(UInt32.self, bytes, at: 44))
        guard header.storedLength != nil else { return nil }
        // A wrap marker carries nothing.
        if kind == .wrap, header.metadataLength != 0 || header.contentLength != 0 { return nil }
        return header
    }

    /// Checks the header CRC over the header's first 44 bytes and the metadata, then decodes the metadata.
    /// `metadata` is exactly the record's metadata bytes.
    static func checkHead(_ header: RecordHeader, headerBytes: ArraySlice<UInt8>, metadata: ArraySlice<UInt8>) -> Metadata?? {
        guard headerBytes.count >= recordHeaderSize, metadata.count == header.metadataLength,
              crc(metadata, continuing: crc(headerBytes.prefix(44))) == header.headerCRC
        else { return nil }
        if header.kind == .wrap { return .some(nil) }
        guard let decoded = decodeMetadata(metadata) else { return nil }
        return .some(decoded)
    }

    static func encode(_ metadata: Metadata) -> [UInt8] {
        var bytes: [UInt8] = []
        appendString(metadata.name, to: &bytes)
        append(UInt16(metadata.mailboxes.count), to: &bytes)
        for mailbox in metadata.mailboxes { appendString(mailbox, to: &bytes) }
        return bytes
    }

    /// Metadata whose every name is safe to use as a path below the mail root: a record is replayed into
    /// the paths it names, so a damaged one must not name `../` or an absolute path.
    static func decodeMetadata(_ bytes: ArraySlice<UInt8>) -> Metadata? {
        var cursor = bytes.startIndex
        func string() -> String? {
            guard bytes.endIndex - cursor >= 2 else { return nil }
            let length = Int(integer(UInt16.self, bytes, at: cursor - bytes.startIndex))
            cursor += 2
            guard bytes.endIndex - cursor >= length else { return nil }
            defer { cursor += length }
            return String(validating: bytes[cursor..<(cursor + length)], as: UTF8.self)
        }
        guard let name = string(), isSafeComponent(name), bytes.endIndex - cursor >= 2 else { return nil }
        let count = Int(integer(UInt16.self, bytes, at: cursor - bytes.startIndex))
        cursor += 2
        guard count >= 1 else { return nil }
        var mailboxes: [String] = []
        for _ in 0..<count {
            guard let mailbox = string() else { return nil }
            guard isSafeMailbox(mailbox) else { return nil }
            mailboxes.append(mailbox)
        }
        guard cursor == bytes.endIndex else { return nil }
        return Metadata(name: name, mailboxes: mailboxes)
    }

    /// A Maildir below the mail root: `domain/local-part`, both safe components.
    static func isSafeMailbox(_ path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        return parts.count == 2 && parts.allSatisfy { isSafeComponent(String($0)) }
    }

    /// One directory entry name: not empty, not `.`-led (so neither `.` nor `..`), no `/`, no NUL or other
    /// control character, at most 255 bytes.
    static func isSafeComponent(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 255 && !name.hasPrefix(".")
            && name.utf8.allSatisfy { $0 > 0x20 && $0 != UInt8(ascii: "/") && $0 != 0x7F }
    }

    // MARK: Integers

    private static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }

    private static func appendString(_ text: String, to bytes: inout [UInt8]) {
        let utf8 = Array(text.utf8.prefix(Int(UInt16.max)))
        append(UInt16(utf8.count), to: &bytes)
        bytes += utf8
    }

    /// The integer at `offset` from the slice's start; the caller has checked the length.
    private static func integer<T: FixedWidthInteger>(_: T.Type, _ bytes: ArraySlice<UInt8>, at offset: Int) -> T {
        var value: T = 0
        for index in (0..<MemoryLayout<T>.size).reversed() {
            value = value << 8 | T(bytes[bytes.startIndex + offset + index])
        }
        return value
    }
}

/// Entry point for the libFuzzer target `journal-record-fuzzer` (`@_spi(Fuzzing) import SMTPService`).
@_spi(Fuzzing) public enum JournalFuzzing {
    /// Decodes `bytes` as a journal's head and as a record the way a replay does; whatever decodes must
    /// encode back to the same bytes and name only safe paths. Traps on a violation (a finding).
    public static func check(_ bytes: [UInt8]) {
        // The metadata decoder on its own too: behind the header's CRC random input would never reach it.
        if let metadata = JournalFormat.decodeMetadata(bytes[...]) {
            precondition(JournalFormat.isSafeComponent(metadata.name), "an unsafe name was accepted")
            precondition(JournalFormat.decodeMetadata(JournalFormat.encode(metadata)[...]) == metadata, "metadata does not round-trip")
        }
        if let checkpoint = JournalFormat.latestCheckpoint(in: bytes) {
            let again = JournalFormat.encode(checkpoint)
            precondition(JournalFormat.decodeCheckpoint(again[...]) == checkpoint, "a checkpoint does not round-trip")
        }
        guard let header = JournalFormat.decodeRecordHeader(bytes[...]) else { return }
        let headerBytes = bytes.prefix(JournalFormat.recordHeaderSize)
        let rest = bytes.dropFirst(JournalFormat.recordHeaderSize)
        guard rest.count >= header.metadataLength,
              let decoded = JournalFormat.checkHead(header, headerBytes: headerBytes, metadata: rest.prefix(header.metadataLength))
        else { return }
        guard let metadata = decoded else { return }
        precondition(JournalFormat.isSafeComponent(metadata.name), "an unsafe name was accepted")
        for mailbox in metadata.mailboxes {
            precondition(!mailbox.hasPrefix("/") && !mailbox.split(separator: "/").contains(".."), "an unsafe path was accepted")
        }
        let head = JournalFormat.encodeRecordHead(kind: header.kind, epoch: header.epoch, sequence: header.sequence, metadata: metadata,
                                                  contentLength: header.contentLength, contentCRC: header.contentCRC)
        precondition(head[...] == bytes.prefix(head.count), "a record head does not round-trip")
    }
}
