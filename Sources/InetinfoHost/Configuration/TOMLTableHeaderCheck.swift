/// Refuses TOML table headers that would abort the process inside the parser.
///
/// toml++ (under TOMLKit) `assert`s, rather than reporting an error, when a table header's first key
/// character can start no key: `[$]`, `[#]`, `[é]` abort the whole host — at start, and on a reload
/// after an operator's typo, with both services (found by the configuration fuzzer). So before the text
/// reaches it, every header is checked here: after `[` or `[[` and blanks must come a bare-key character
/// (`A-Za-z0-9_-`) or a quote. A small scanner finds the headers: a `[` first on a line, outside any
/// string, comment, array or inline table.
enum TOMLTableHeaderCheck {
    /// The 1-based line of the first header that would abort the parser, or nil.
    static func firstBadHeader(in text: String) -> Int? {
        let bytes = Array(text.utf8)
        var index = 0, line = 1, depth = 0
        var lineStart = true
        func at(_ offset: Int) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\n"):
                line += 1
                lineStart = true
                index += 1
                continue
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                index += 1
                continue
            case UInt8(ascii: "#"):
                while index < bytes.count, bytes[index] != UInt8(ascii: "\n") { index += 1 }
                continue
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                skipString(bytes, &index, &line, quote: byte)
                lineStart = false
                continue
            case UInt8(ascii: "[") where depth == 0 && lineStart:
                var next = index + 1
                if next < bytes.count, bytes[next] == UInt8(ascii: "[") { next += 1 }
                while next < bytes.count, bytes[next] == UInt8(ascii: " ") || bytes[next] == UInt8(ascii: "\t") { next += 1 }
                guard next < bytes.count, isKeyStart(bytes[next]) else { return line }
                // The rest of the header line holds no value that could open a bracket.
                while index < bytes.count, bytes[index] != UInt8(ascii: "\n") { index += 1 }
                continue
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                depth = max(0, depth - 1)
            default:
                break
            }
            lineStart = false
            index += 1
        }
        return nil
    }

    private static func isKeyStart(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
            || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'")
    }

    /// Moves past a basic or literal string, single-line or multi-line (`"""`, `'''`), counting lines.
    private static func skipString(_ bytes: [UInt8], _ index: inout Int, _ line: inout Int, quote: UInt8) {
        let triple = index + 2 < bytes.count && bytes[index + 1] == quote && bytes[index + 2] == quote
        index += triple ? 3 : 1
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\\"), quote == UInt8(ascii: "\"") {
                index += 2
                continue
            }
            if byte == UInt8(ascii: "\n") {
                line += 1
                if !triple { return }  // an unterminated string: the parser reports it
            }
            if byte == quote {
                if !triple {
                    index += 1
                    return
                }
                if index + 2 < bytes.count, bytes[index + 1] == quote, bytes[index + 2] == quote {
                    index += 3
                    return
                }
            }
            index += 1
        }
    }
}
