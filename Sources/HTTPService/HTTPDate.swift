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
    static func parse(_ text: String) -> Int? {
        let words = text.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        var day: Int?, month: Int?, year: Int?, clock: [Int]?
        switch words.count {
        case 5 where words[4] == "GMT":
            if words[1].contains("-") {
                // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
                let date = words[1].split(separator: "-").map(String.init)
                guard date.count == 3, let shortYear = Int(date[2]) else { return nil }
                day = Int(date[0]); month = months.firstIndex(of: date[1].lowercased()); year = shortYear < 70 ? 2000 + shortYear : 1900 + shortYear
                clock = words[2].split(separator: ":").compactMap { Int($0) }
            } else {
                return nil
            }
        case 6 where words[5] == "GMT":
            // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
            day = Int(words[1]); month = months.firstIndex(of: words[2].lowercased()); year = Int(words[3])
            clock = words[4].split(separator: ":").compactMap { Int($0) }
        case 5:
            // asctime: Sun Nov  6 08:49:37 1994
            month = months.firstIndex(of: words[1].lowercased()); day = Int(words[2]); year = Int(words[4])
            clock = words[3].split(separator: ":").compactMap { Int($0) }
        default:
            return nil
        }
        guard let day, let month, let year, let clock, clock.count == 3, (1...31).contains(day),
              (0...23).contains(clock[0]), (0...59).contains(clock[1]), (0...60).contains(clock[2]) else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(clock[0])
        parts.tm_min = Int32(clock[1])
        parts.tm_sec = Int32(clock[2])
        return Int(timegm(&parts))
    }
}
