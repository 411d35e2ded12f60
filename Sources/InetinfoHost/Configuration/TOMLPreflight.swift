/// Refuses, before the TOML parser sees them, the inputs that make it abort the process.
///
/// toml++ (under TOMLKit) `assert`s, rather than reporting an error, when its look-ahead sent it to a
/// routine whose first character is then wrong — and SwiftPM builds its C++ with assertions on. Found by
/// the configuration fuzzer: a table header whose first character can start no key (`[$]`, `[#]`, `[é]`)
/// and a malformed date-time (`l=1979-05-27T:`) each abort the whole host, at start and on a reload after
/// an operator's typo, with both services. So a small scanner goes over the text first (outside strings
/// and comments) and refuses:
/// - a table header (a `[` first on a line, outside any array or inline table) not followed by a bare-key
///   character (`A-Za-z0-9_-`) or a quote, after `[` or `[[` and blanks;
/// - dates and times, which are no configuration values anyway: a `:` (only times have one outside
///   strings), or a value that starts with four digits and a `-`;
/// - a character outside printable ASCII, tab, CR and LF (TOML allows no other there);
/// - tokens where the parser's dispatch would not expect them: a line that starts with neither a key nor
///   a header, a value that starts with none of a value's characters, brackets that do not pair up, a
///   `,` or `=` out of place.
/// It is no TOML parser: what passes may still be refused by toml++, with an error.
enum TOMLPreflight {
    /// The 1-based line of the first problem and what it is, or nil.
    static func firstProblem(in text: String) -> (line: Int, problem: String)? {
        let bytes = Array(text.utf8)
        var index = 0, line = 1
        var lineStart = true
        /// The arrays and inline tables open around here, innermost last.
        var open: [UInt8] = []
        /// What the next token must be, as far as the parser's dispatch is concerned.
        enum Expect { case anything, value, valueOrClose, key, keyOrClose }
        var expect = Expect.anything
        let valueProblem = "a value must be a string, number, boolean, array or inline table"
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
                // A string is a value or a quoted key: either way the token is complete.
                skipString(bytes, &index, &line, quote: byte)
                lineStart = false
                expect = .anything
                continue
            default:
                break
            }
            defer { lineStart = false }
            if lineStart, open.isEmpty, expect == .anything, byte != UInt8(ascii: "["), !isKeyStart(byte) {
                return (line, "a line must start with a key or a table header")
            }
            switch byte {
            case UInt8(ascii: "[") where open.isEmpty && lineStart:
                var next = index + 1
                if next < bytes.count, bytes[next] == UInt8(ascii: "[") { next += 1 }
                while next < bytes.count, bytes[next] == UInt8(ascii: " ") || bytes[next] == UInt8(ascii: "\t") { next += 1 }
                guard next < bytes.count, isKeyStart(bytes[next]) else { return (line, "a table header must start with a key") }
                // The rest of the header line holds no value that could open a bracket.
                while index < bytes.count, bytes[index] != UInt8(ascii: "\n") { index += 1 }
                continue
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                guard expect == .value || expect == .valueOrClose else { return (line, "'\(Character(UnicodeScalar(byte)))' where no value starts") }
                open.append(byte)
                expect = byte == UInt8(ascii: "[") ? .valueOrClose : .keyOrClose
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                let opener = byte == UInt8(ascii: "]") ? UInt8(ascii: "[") : UInt8(ascii: "{")
                guard open.last == opener, expect != .value, expect != .key else { return (line, "unbalanced brackets") }
                open.removeLast()
                expect = .anything
            case UInt8(ascii: ","):
                guard let inner = open.last, expect == .anything else { return (line, "',' outside an array or inline table") }
                expect = inner == UInt8(ascii: "[") ? .valueOrClose : .key
            case UInt8(ascii: "="):
                guard expect == .anything else { return (line, "'=' where a key or value must come") }
                expect = .value
            case UInt8(ascii: ":"):
                return (line, "dates and times are not configuration values")
            case 0x21...0x7E:
                switch expect {
                case .value, .valueOrClose:
                    guard isValueStart(byte) else { return (line, valueProblem) }
                    if index + 4 < bytes.count, bytes[index..<index + 4].allSatisfy(isDigit), bytes[index + 4] == UInt8(ascii: "-") {
                        return (line, "dates and times are not configuration values")
                    }
                case .key, .keyOrClose:
                    guard isKeyStart(byte) else { return (line, "a key must come here") }
                case .anything:
                    break
                }
                expect = .anything
            default:
                return (line, "a character outside printable ASCII")
            }
            index += 1
        }
        return nil
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    /// Strings are handled apart; numbers (signed, `inf`, `nan`), `true` and `false`.
    private static func isValueStart(_ byte: UInt8) -> Bool {
        isDigit(byte) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "t")
            || byte == UInt8(ascii: "f") || byte == UInt8(ascii: "i") || byte == UInt8(ascii: "n")
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
