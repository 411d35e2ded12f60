import Foundation

/// Human-readable `crashes`, `crashes show` and `quarantine` output. A peer's input is shown safely:
/// printable ASCII as it is, line ends as `\r\n` at the end of a line, every other byte as `\xNN`, so
/// that no input can move the cursor, change the terminal's colours or hide a byte.
public enum CrashPresenter {
    public static func list(_ crashes: [CrashSummary]) -> String {
        guard !crashes.isEmpty else { return "no crash records\n" }
        let rows = crashes.map { crash in
            [escaped(crash.id), escaped("\(crash.service)#\(crash.instance)"), crash.pid.map(String.init) ?? "-",
             escaped(how(crash.signal, crash.exitStatus)), crash.suspect.map(escaped) ?? "-", escaped(crash.reason)]
        }
        return table(header: ["ID", "INSTANCE", "PID", "HOW", "SUSPECT", "REASON"], rows: rows)
    }

    public static func show(_ record: CrashRecord) -> String {
        var lines = [
            "crash \(escaped(record.id))",
            "  service:  \(escaped(record.service)), instance \(record.instance), pid \(record.pid.map(String.init) ?? "-")",
            "  ended:    \(escaped(how(record.signal, record.exitStatus))): \(escaped(record.reason))",
            "  at:       \(ControlJSON.formatDate(record.at))" + (record.uptimeSeconds.map { String(format: ", after %.3f s", $0) } ?? ""),
        ]
        if let suspect = record.suspect {
            lines.append("  suspect:  \(escaped(suspect.peer)) (the thread that failed was processing its input)")
        } else {
            lines.append("  suspect:  none (no input was being processed)")
        }
        lines.append("  connections open: \(record.connections.count + record.connectionsOmitted)"
            + (record.connectionsOmitted > 0 ? " (\(record.connectionsOmitted) not kept)" : ""))
        for (index, connection) in record.connections.enumerated() {
            lines.append("")
            lines.append("  [\(index)] \(escaped(connection.peer))\(connection.suspect ? "  SUSPECT" : "")  in \(connection.bytesIn) B, out \(connection.bytesOut) B, "
                + "opened \(ControlJSON.formatDate(connection.openedAt))"
                + (connection.lastInputAt.map { ", last input \(ControlJSON.formatDate($0))" } ?? ""))
            if connection.bytesIn > UInt64(connection.lastInput.count) {
                lines.append("      (last \(connection.lastInput.count) of \(connection.bytesIn) bytes)")
            }
            for line in escapedLines(connection.lastInput) { lines.append("      \(line)") }
        }
        if let backtrace = record.backtrace {
            lines.append("")
            lines.append("  crash report:")
            for line in backtrace.split(separator: "\n", omittingEmptySubsequences: false) { lines.append("    \(escaped(String(line)))") }
        }
        if !record.events.isEmpty {
            lines.append("")
            lines.append("  events:")
            for event in record.events { lines.append("    " + escaped(StatusPresenter.line(event))) }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public static func quarantine(_ entries: [QuarantineEntry]) -> String {
        guard !entries.isEmpty else { return "no address is quarantined\n" }
        let rows = entries.map {
            [escaped($0.address), ControlJSON.formatDate($0.since), ControlJSON.formatDate($0.until), escaped($0.crashes.joined(separator: ", "))]
        }
        return table(header: ["ADDRESS", "SINCE", "UNTIL", "CRASHES"], rows: rows)
    }

    /// The bytes as lines of safe text, one per line the peer sent.
    public static func escapedLines(_ bytes: Data) -> [String] {
        let hex = Array("0123456789ABCDEF".utf8)
        var lines: [String] = []
        var current: [UInt8] = []
        var index = bytes.startIndex
        func endLine(_ ending: String) {
            current.append(contentsOf: ending.utf8)
            lines.append(String(decoding: current, as: UTF8.self))
            current.removeAll(keepingCapacity: true)
        }
        while index < bytes.endIndex {
            let byte = bytes[index]
            index = bytes.index(after: index)
            switch byte {
            case 0x0D where index < bytes.endIndex && bytes[index] == 0x0A:
                index = bytes.index(after: index)
                endLine("\\r\\n")
            case 0x0A:
                endLine("\\n")
            case 0x5C:
                current += [0x5C, 0x5C]
            case 0x20...0x7E:
                current.append(byte)
            default:
                current += [0x5C, UInt8(ascii: "x"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
            }
        }
        if !current.isEmpty || lines.isEmpty { lines.append(String(decoding: current, as: UTF8.self)) }
        return lines
    }

    /// `text` on one line, safe for a terminal.
    public static func escaped(_ text: String) -> String {
        // Text is valid Unicode already: only what a terminal would act on, or show as something else, is
        // escaped (controls, C1, format characters such as bidirectional overrides, unassigned and private
        // code points); the rest (`→` in an event line, a name in another script) stays readable.
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator, .privateUse, .surrogate, .unassigned:
                result += escapedLines(Data(String(scalar).utf8)).joined()
            default:
                result += scalar == "\\" ? "\\\\" : String(scalar)
            }
        }
        return result
    }

    static func how(_ signal: String?, _ exitStatus: Int32?) -> String {
        if let signal { return signal }
        if let exitStatus { return "exit \(exitStatus)" }
        return "failed"
    }

    private static func table(header: [String], rows: [[String]]) -> String {
        let widths = (0..<header.count).map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        return ([header] + rows).map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}
