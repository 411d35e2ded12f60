import Glibc

/// HTTP dates (RFC 9110 §5.6.7): IMF-fixdate out; IMF-fixdate, RFC 850 and asctime in.
enum HTTPDate {
    /// RFC 9110 §6.6.1: an origin server with a clock sends `Date`; formatted once a second per connection.
    struct Cache {
        private var second = 0
        private var text = ""

        mutating func now() -> String {
            let current = time(nil)
            if current != second {
                second = current
                text = HTTPDate.format(seconds: current)
            }
            return text
        }
    }

    static func format(seconds: Int) -> String {
        text(seconds: seconds, format: "%a, %d %b %Y %H:%M:%S GMT", localTime: false)
    }

    /// strftime(3) of `seconds` in UTC or local time (the access log uses local time, as nginx does).
    static func text(seconds: Int, format: String, localTime: Bool) -> String {
        var time = time_t(seconds)
        var parts = tm()
        if localTime { localtime_r(&time, &parts) } else { gmtime_r(&time, &parts) }
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, format, &parts)
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]

    /// Seconds since the epoch, or nil for a malformed date (which is then ignored, as RFC 9110 says).
    ///
    /// Every field comes from the network: the year is accepted only as four digits (two in RFC 850's
    /// form), the other fields only in their calendar ranges, so no conversion below can trap, whatever
    /// the text (`99999999999` as a year once ended the whole host).
    static func parse(_ text: String) -> Int? {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "," })
        var day: Int?, month: Int?, year: Int?, clock: [Int]?
        switch words.count {
        case 4 where words[3] == "GMT":
            // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
            let date = words[1].split(separator: "-", omittingEmptySubsequences: false)
            guard date.count == 3, let shortYear = number(date[2], digits: 2...2) else { return nil }
            day = number(date[0], digits: 1...2); month = monthIndex(date[1])
            year = shortYear < 70 ? 2000 + shortYear : 1900 + shortYear
            clock = clockTime(words[2])
        case 6 where words[5] == "GMT":
            // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
            day = number(words[1], digits: 1...2); month = monthIndex(words[2]); year = number(words[3], digits: 4...4)
            clock = clockTime(words[4])
        case 5:
            // asctime: Sun Nov  6 08:49:37 1994
            month = monthIndex(words[1]); day = number(words[2], digits: 1...2); year = number(words[4], digits: 4...4)
            clock = clockTime(words[3])
        default:
            return nil
        }
        guard let day, let month, let year, let clock, (1...daysIn(month: month, year: year)).contains(day),
              (0...23).contains(clock[0]), (0...59).contains(clock[1]), (0...60).contains(clock[2]) else { return nil }
        var parts = tm()
        // In range by construction: a four-digit year, a month index, calendar fields.
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(clock[0])
        parts.tm_min = Int32(clock[1])
        parts.tm_sec = Int32(clock[2])
        return Int(timegm(&parts))
    }

    /// A decimal number of `digits` ASCII digits (no sign, no spaces).
    private static func number(_ text: Substring, digits: ClosedRange<Int>) -> Int? {
        let bytes = text.utf8
        guard digits.contains(bytes.count), bytes.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return bytes.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
    }

    /// Days in a month (0-based index) of the Gregorian calendar: a 31st of February is no date, and
    /// timegm(3) would roll it into March.
    private static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 1: year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 3, 5, 8, 10: 30
        default: 31
        }
    }

    private static func monthIndex(_ text: Substring) -> Int? {
        guard text.utf8.count == 3 else { return nil }
        return months.firstIndex(of: text.lowercased())
    }

    /// `HH:MM:SS`, two digits each.
    private static func clockTime(_ text: Substring) -> [Int]? {
        let fields = text.split(separator: ":", omittingEmptySubsequences: false)
        guard fields.count == 3 else { return nil }
        let values = fields.compactMap { number($0, digits: 2...2) }
        return values.count == 3 ? values : nil
    }
}
