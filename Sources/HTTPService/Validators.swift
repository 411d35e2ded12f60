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
    /// does not parse is ignored, as the RFC says. One pass over the fields: most requests have none of
    /// these, and each `HTTPHeaders` lookup would be a pass of its own.
    func precondition(_ headers: HTTPHeaders) -> Precondition {
        var ifMatch: [Substring]?, ifNoneMatch: [Substring]?, modifiedSince: String?, unmodifiedSince: String?
        for (name, value) in headers {
            let bytes = name.utf8
            guard bytes.count >= 8, bytes.first.map({ $0 | 0x20 }) == UInt8(ascii: "i") else { continue }
            switch bytes.count {
            case 8 where RequestGuard.HeadFields.named(bytes, "if-match"):
                ifMatch = (ifMatch ?? []) + Self.members(value)
            case 13 where RequestGuard.HeadFields.named(bytes, "if-none-match"):
                ifNoneMatch = (ifNoneMatch ?? []) + Self.members(value)
            case 17 where RequestGuard.HeadFields.named(bytes, "if-modified-since"):
                if modifiedSince == nil { modifiedSince = value }
            case 19 where RequestGuard.HeadFields.named(bytes, "if-unmodified-since"):
                if unmodifiedSince == nil { unmodifiedSince = value }
            default:
                break
            }
        }
        if let ifMatch {
            guard ifMatch.contains(where: { tag in tag == "*" || (!tag.hasPrefix("W/") && tag == etag) }) else { return .failed }
        } else if let since = unmodifiedSince.flatMap(HTTPDate.parse), modifiedSeconds > since {
            return .failed
        }
        if let ifNoneMatch {
            return ifNoneMatch.contains { tag in tag == "*" || Self.opaque(String(tag)) == Self.opaque(etag) } ? .notModified : .proceed
        }
        if let since = modifiedSince.flatMap(HTTPDate.parse), modifiedSeconds <= since {
            return .notModified
        }
        return .proceed
    }

    /// A list field's members (RFC 9110 §5.6.1), without the spaces around them.
    private static func members(_ value: String) -> [Substring] {
        value.split(separator: ",").map { member in
            let start = member.firstIndex { $0 != " " && $0 != "\t" } ?? member.endIndex
            let end = member.lastIndex { $0 != " " && $0 != "\t" }.map(member.index(after:)) ?? start
            return member[start..<max(start, end)]
        }.filter { !$0.isEmpty }
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
