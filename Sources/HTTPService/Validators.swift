import NIOHTTP1

/// The file's validators and the conditional-request rules of RFC 9110 §13.
struct Validators {
    var size: Int
    var modifiedSeconds: Int
    var modifiedNanoseconds: Int

    /// A strong entity tag from the modification time (to the nanosecond) and the size, as nginx does.
    var etag: String { "\"\(String(modifiedSeconds, radix: 16))\(String(modifiedNanoseconds, radix: 16))-\(String(size, radix: 16))\"" }

    /// `If-None-Match` (weak comparison) decides when present; otherwise `If-Modified-Since`.
    func notModified(_ headers: HTTPHeaders) -> Bool {
        let inm = headers[canonicalForm: "If-None-Match"]
        if !inm.isEmpty {
            return inm.contains { tag in tag == "*" || Self.opaque(String(tag)) == Self.opaque(etag) }
        }
        if let since = headers.first(name: "If-Modified-Since"), let date = HTTPDate.parse(since) {
            return modifiedSeconds <= date
        }
        return false
    }

    /// `If-Range`: the range is served only if the validator still matches (strong comparison for tags).
    func rangeApplies(_ headers: HTTPHeaders) -> Bool {
        guard let condition = headers.first(name: "If-Range") else { return true }
        if condition.hasPrefix("\"") { return condition == etag }
        if let date = HTTPDate.parse(condition) { return date == modifiedSeconds }
        return false
    }

    private static func opaque(_ tag: String) -> String {
        tag.hasPrefix("W/") ? String(tag.dropFirst(2)) : tag
    }
}
