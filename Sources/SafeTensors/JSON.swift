/// A small JSON model used for safetensors headers, shard indexes, config files and reports.
///
/// Written by hand rather than through Foundation because the format needs things Foundation's
/// decoders do not give: integers exact up to 2^64-1 (numbers keep their source text), objects in
/// source order with duplicate keys visible, and output with sorted keys where non-finite floats
/// become `null` instead of an exception.
public indirect enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// A number as its JSON text (exact; convert with `uint64`, `double`).
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in source order; duplicates are preserved so callers can reject them.
    case object([(String, JSONValue)])

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.number(x), .number(y)): return x == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    public static func int(_ v: Int) -> JSONValue { .number(String(v)) }
    public static func uint(_ v: UInt64) -> JSONValue { .number(String(v)) }
    /// A float; non-finite values become `null` so the document stays valid JSON.
    public static func double(_ v: Double) -> JSONValue { v.isFinite ? .number(formatDouble(v)) : .null }

    public subscript(key: String) -> JSONValue? {
        if case let .object(members) = self { return members.last(where: { $0.0 == key })?.1 }
        return nil
    }
    public var stringValue: String? { if case let .string(s) = self { return s }; return nil }
    public var arrayValue: [JSONValue]? { if case let .array(a) = self { return a }; return nil }
    public var objectValue: [(String, JSONValue)]? { if case let .object(o) = self { return o }; return nil }
    public var doubleValue: Double? { if case let .number(t) = self { return Double(t) }; return nil }

    /// The value as an exact unsigned integer: plain digits only (no sign, fraction or exponent),
    /// at most 2^64-1. This is the reference reader's rule for shapes and offsets.
    public var uint64Value: UInt64? {
        guard case let .number(t) = self, !t.isEmpty else { return nil }
        var v: UInt64 = 0
        for c in t.utf8 {
            guard c >= 48 && c <= 57 else { return nil }
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(UInt64(c - 48))
            if o1 || o2 { return nil }
            v = s
        }
        return v
    }
}

func formatDouble(_ v: Double) -> String {
    if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) == "-0" ? "0" : String(Int64(v)) }
    return "\(v)"
}

// MARK: - Parsing

public struct JSONParseError: Error, CustomStringConvertible {
    public let message: String
    public let offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

public enum JSONParser {
    /// Parses one JSON value surrounded only by JSON whitespace (space, tab, LF, CR).
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> JSONValue {
        var p = Cursor(bytes: bytes)
        p.skipWhitespace()
        let v = try p.value(depth: 0)
        p.skipWhitespace()
        if p.i != bytes.count { throw p.fail("trailing characters after the JSON value") }
        return v
    }

    public static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        try bytes.withUnsafeBytes { try parse($0) }
    }
    public static func parse(_ text: String) throws -> JSONValue { try parse(Array(text.utf8)) }

    private struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var i = 0
        init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        func fail(_ m: String) -> JSONParseError { JSONParseError(message: m, offset: i) }
        var atEnd: Bool { i >= bytes.count }
        func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

        mutating func skipWhitespace() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D { i += 1 }
        }

        mutating func expect(_ literal: String) throws {
            for c in literal.utf8 {
                guard peek() == c else { throw fail("invalid literal") }
                i += 1
            }
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < 128 else { throw fail("nesting too deep") }
            guard let c = peek() else { throw fail("unexpected end of input") }
            switch c {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw fail("expected a JSON value")
            }
        }

        mutating func object(depth: Int) throws -> JSONValue {
            i += 1
            var members: [(String, JSONValue)] = []
            skipWhitespace()
            if peek() == UInt8(ascii: "}") { i += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard peek() == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let key = try string()
                skipWhitespace()
                guard peek() == UInt8(ascii: ":") else { throw fail("expected ':'") }
                i += 1
                skipWhitespace()
                members.append((key, try value(depth: depth + 1)))
                skipWhitespace()
                guard let c = peek() else { throw fail("unexpected end of input in an object") }
                i += 1
                if c == UInt8(ascii: "}") { return .object(members) }
                guard c == UInt8(ascii: ",") else { i -= 1; throw fail("expected ',' or '}'") }
            }
        }

        mutating func array(depth: Int) throws -> JSONValue {
            i += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if peek() == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                skipWhitespace()
                items.append(try value(depth: depth + 1))
                skipWhitespace()
                guard let c = peek() else { throw fail("unexpected end of input in an array") }
                i += 1
                if c == UInt8(ascii: "]") { return .array(items) }
                guard c == UInt8(ascii: ",") else { i -= 1; throw fail("expected ',' or ']'") }
            }
        }

        mutating func number() throws -> JSONValue {
            let start = i
            if peek() == UInt8(ascii: "-") { i += 1 }
            guard let d = peek(), d >= 48 && d <= 57 else { throw fail("invalid number") }
            if d == 48 { i += 1 } else { while let c = peek(), c >= 48 && c <= 57 { i += 1 } }
            if peek() == UInt8(ascii: ".") {
                i += 1
                guard let c = peek(), c >= 48 && c <= 57 else { throw fail("invalid number") }
                while let c = peek(), c >= 48 && c <= 57 { i += 1 }
            }
            if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
                i += 1
                if let s = peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { i += 1 }
                guard let c = peek(), c >= 48 && c <= 57 else { throw fail("invalid number") }
                while let c = peek(), c >= 48 && c <= 57 { i += 1 }
            }
            return .number(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self))
        }

        mutating func hex4() throws -> UInt32 {
            guard i + 4 <= bytes.count else { throw fail("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[i]
                let d: UInt32
                switch c {
                case 48...57: d = UInt32(c - 48)
                case 65...70: d = UInt32(c - 55)
                case 97...102: d = UInt32(c - 87)
                default: throw fail("invalid \\u escape")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }

        mutating func string() throws -> String {
            i += 1  // opening quote
            var out: [UInt8] = []
            var runStart = i
            while true {
                guard let c = peek() else { throw fail("unterminated string") }
                if c == UInt8(ascii: "\"") {
                    out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<i]))
                    i += 1
                    break
                }
                if c < 0x20 { throw fail("control character in string") }
                if c != UInt8(ascii: "\\") { i += 1; continue }
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[runStart..<i]))
                i += 1
                guard let e = peek() else { throw fail("unterminated escape") }
                i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var cp = try hex4()
                    if (0xD800...0xDBFF).contains(cp) {
                        guard i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw fail("lone surrogate in string")
                        }
                        i += 2
                        let lo = try hex4()
                        guard (0xDC00...0xDFFF).contains(lo) else { throw fail("lone surrogate in string") }
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(cp) {
                        throw fail("lone surrogate in string")
                    }
                    out.append(contentsOf: Array(String(Character(Unicode.Scalar(cp)!)).utf8))
                default: throw fail("invalid escape")
                }
                runStart = i
            }
            // The caller validated UTF-8 for the whole document; re-check so a bad sequence cannot pass.
            guard let s = String(validating: out, as: UTF8.self) else { throw fail("invalid UTF-8 in string") }
            return s
        }
    }
}

// MARK: - Writing

public extension JSONValue {
    /// Compact JSON in member order (the safetensors writer's layout, like serde_json::to_string).
    func compact() -> String {
        var out = ""
        write(to: &out, indent: nil, level: 0, sortKeys: false)
        return out
    }

    /// Indented JSON with sorted keys (reports, indexes). `indent` spaces per level.
    func pretty(indent: Int = 2, sortKeys: Bool = true) -> String {
        var out = ""
        write(to: &out, indent: indent, level: 0, sortKeys: sortKeys)
        return out
    }

    private func write(to out: inout String, indent: Int?, level: Int, sortKeys: Bool) {
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .number(t): out += t
        case let .string(s): JSONValue.escape(s, into: &out)
        case let .array(items):
            if items.isEmpty { out += "[]"; return }
            out += "["
            for (k, v) in items.enumerated() {
                if k > 0 { out += indent == nil ? "," : ", " }
                v.write(to: &out, indent: indent, level: level, sortKeys: sortKeys)
            }
            out += "]"
        case let .object(members):
            if members.isEmpty { out += "{}"; return }
            let ordered = sortKeys ? members.sorted { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) } : members
            out += "{"
            for (k, (key, v)) in ordered.enumerated() {
                if k > 0 { out += "," }
                if let indent { out += "\n" + String(repeating: " ", count: indent * (level + 1)) }
                JSONValue.escape(key, into: &out)
                out += indent == nil ? ":" : ": "
                v.write(to: &out, indent: indent, level: level + 1, sortKeys: sortKeys)
            }
            if let indent { out += "\n" + String(repeating: " ", count: indent * level) }
            out += "}"
        }
    }

    /// serde_json's escaping: quote, backslash and control characters; everything else raw UTF-8.
    static func escape(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 {
                    let h = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}
