import NIOHTTP1

/// The file's validators and the conditional-request rules of RFC 9110 §13.
struct Validators {
    var size: Int
    var modifiedSeconds: Int
    var modifiedNanoseconds: Int

    /// A strong entity tag from the modification time (to the nanosecond) and the size, as nginx does.
    var etag: String { "\"\(String(modifiedSeconds, radix: 16))\(String(modifiedNanoseconds, radix: 16))-\(String(size, radix: 16))\"" }

    /// What the preconditions of a GET or HEAD say (RFC 9110 §13.2.2; the file exists).
    enum Precondition: Equatable {
        case proceed
        /// 304: the client's copy is current.
        case notModified
        /// 412: the client asked for a version this file no longer is (`If-Match`, `If-Unmodified-Since`).
        case failed
    }

    /// RFC 9110 §13.2.2, in its order: `If-Match` (strong comparison; `*` matches any file), else
    /// `If-Unmodified-Since`; then `If-None-Match` (weak comparison), else `If-Modified-Since`. A date that
    /// does not parse is ignored, as the RFC says.
    func precondition(_ headers: HTTPHeaders) -> Precondition {
        let im = headers[canonicalForm: "If-Match"]
        if !im.isEmpty {
            guard im.contains(where: { tag in tag == "*" || (!tag.hasPrefix("W/") && tag == etag) }) else { return .failed }
        } else if let since = headers.first(name: "If-Unmodified-Since"), let date = HTTPDate.parse(since), modifiedSeconds > date {
            return .failed
        }
        let inm = headers[canonicalForm: "If-None-Match"]
        if !inm.isEmpty {
            return inm.contains { tag in tag == "*" || Self.opaque(String(tag)) == Self.opaque(etag) } ? .notModified : .proceed
        }
        if let since = headers.first(name: "If-Modified-Since"), let date = HTTPDate.parse(since), modifiedSeconds <= date {
            return .notModified
        }
        return .proceed
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
