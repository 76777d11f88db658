/// One tensor's entry in a safetensors header.
public struct TensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [UInt64]
    /// Offsets relative to the start of the data buffer; `end` is one past the last byte.
    public let begin: UInt64
    public let end: UInt64

    public init(name: String, dtype: DType, shape: [UInt64], begin: UInt64, end: UInt64) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.begin = begin; self.end = end
    }

    public var byteCount: Int { Int(end - begin) }
    /// Element count (validated not to overflow when the header was parsed).
    public var count: Int {
        var p: UInt64 = 1
        for d in shape { p = p.multipliedReportingOverflow(by: d).partialValue }
        return Int(clamping: p)
    }
    /// The shape as Ints (dimensions beyond Int.max only occur in zero-size tensors; clamped).
    public var shapeInts: [Int] { shape.map { Int(clamping: $0) } }
}

/// A parsed and validated safetensors header.
public struct Header: Sendable {
    /// Tensors in data-offset order (the file's layout order).
    public let tensors: [TensorInfo]
    /// `__metadata__`, or nil when absent or `null`.
    public let metadata: [(String, String)]?
    /// Header length N from the first 8 bytes (padding included).
    public let headerLength: UInt64
    /// Size of the data buffer (the largest `end`).
    public let dataLength: UInt64

    /// The reference reader's header limit (MAX_HEADER_SIZE).
    public static let maxHeaderSize: UInt64 = 100_000_000

    public var dataStart: UInt64 { 8 + headerLength }
}

public enum HeaderParser {
    /// Validates a whole file's bytes exactly as the reference reader does (same checks, same
    /// order), plus wtool's stricter rules: duplicate tensor names and a tensor named
    /// `__metadata__` are rejected, and a Git LFS pointer is recognised.
    /// - Parameters:
    ///   - prefix: the first bytes of the file (at least min(fileSize, 8 + N)).
    ///   - fileSize: the file's total size.
    public static func parse(prefix: UnsafeRawBufferPointer, fileSize: UInt64, file: String) throws -> Header {
        func fail(_ m: String, _ t: String? = nil) -> FormatError { FormatError(file: file, tensor: t, m) }
        if prefix.starts(with: Array("version https://git-lfs".utf8)) {
            throw fail("this is a Git LFS pointer file, not the weights: run 'git lfs pull' (or download the file) first")
        }
        guard fileSize >= 8, prefix.count >= 8 else {
            throw fail("header too small: the file has \(fileSize) bytes, fewer than the 8-byte length prefix")
        }
        let n = prefix.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard n <= Header.maxHeaderSize else {
            throw fail("header too large: the length prefix says \(n) bytes, more than the 100,000,000 allowed")
        }
        guard 8 + n <= fileSize, prefix.count >= Int(8 + n) else {
            throw fail("invalid header length: the length prefix says \(n) bytes but the file has only \(fileSize) bytes")
        }
        let text = UnsafeRawBufferPointer(rebasing: prefix[8..<Int(8 + n)])
        guard String(validating: text, as: UTF8.self) != nil else {
            throw fail("invalid UTF-8 in header")
        }
        let json: JSONValue
        do {
            json = try JSONParser.parse(text)
        } catch let e as JSONParseError {
            throw fail("invalid JSON in header: \(e)")
        }
        guard case let .object(members) = json else {
            throw fail("invalid JSON in header: expected an object of tensors")
        }

        var metadata: [(String, String)]? = nil
        var sawMetadata = false
        var seen = Set<String>()
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(members.count)
        for (name, value) in members {
            if name == "__metadata__" {
                if sawMetadata { throw fail("invalid JSON in header: duplicate field `__metadata__`") }
                sawMetadata = true
                switch value {
                case .null: metadata = nil
                case let .object(kv):
                    var m: [(String, String)] = []
                    var keys = Set<String>()
                    for (k, v) in kv {
                        guard let s = v.stringValue else {
                            throw fail("invalid JSON in header: __metadata__ value of '\(k)' is not a string")
                        }
                        guard keys.insert(k).inserted else {
                            throw fail("invalid JSON in header: __metadata__ has the key '\(k)' twice")
                        }
                        m.append((k, s))
                    }
                    metadata = m
                default:
                    throw fail("invalid JSON in header: __metadata__ must be a map of strings to strings")
                }
                continue
            }
            guard seen.insert(name).inserted else {
                throw fail("the header names this tensor twice", name)
            }
            tensors.append(try entry(name: name, value: value, fail: fail))
        }

        // Offsets: sorted by (begin, end), contiguous from 0, each sized exactly by shape and dtype.
        tensors.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var start: UInt64 = 0
        for t in tensors {
            guard t.begin == start, t.end >= t.begin else {
                throw fail("invalid offset: data_offsets [\(t.begin), \(t.end)] do not start where the previous tensor ends (\(start))", t.name)
            }
            start = t.end
            var numel: UInt64 = 1
            for d in t.shape {
                let (p, o) = numel.multipliedReportingOverflow(by: d)
                if o { throw fail("overflow computing the size from shape \(t.shape)", t.name) }
                numel = p
            }
            let (nbits, o) = numel.multipliedReportingOverflow(by: UInt64(t.dtype.bits))
            if o { throw fail("overflow computing the size from shape \(t.shape) and dtype \(t.dtype.rawValue)", t.name) }
            if nbits % 8 != 0 {
                throw fail("\(t.dtype.rawValue) tensor of \(numel) elements does not end on a byte boundary", t.name)
            }
            if t.end - t.begin != nbits / 8 {
                throw fail("invalid shape, dtype or offsets: \(t.dtype.rawValue) \(t.shape) needs \(nbits / 8) bytes, data_offsets span \(t.end - t.begin)", t.name)
            }
            // Every tensor must be addressable in this process (sizes beyond Int are impossible files).
            if t.end > UInt64(Int.max) || numel > UInt64(Int.max) {
                throw fail("tensor too large for this machine", t.name)
            }
        }
        let (total, o) = (8 + n).addingReportingOverflow(start)
        guard !o, total == fileSize else {
            throw fail("incomplete file: header and tensors cover \(o ? "more than 2^64" : String(total)) bytes, the file has \(fileSize) (truncated, or trailing bytes)")
        }
        return Header(tensors: tensors, metadata: metadata, headerLength: n, dataLength: start)
    }

    private static func entry(name: String, value: JSONValue, fail: (String, String?) -> FormatError) throws -> TensorInfo {
        guard case let .object(fields) = value else {
            throw fail("invalid JSON in header: expected an object with dtype, shape and data_offsets", name)
        }
        var dtypeV: JSONValue?, shapeV: JSONValue?, offsetsV: JSONValue?
        for (k, v) in fields {
            switch k {
            case "dtype": if dtypeV != nil { throw fail("invalid JSON in header: duplicate field `dtype`", name) }; dtypeV = v
            case "shape": if shapeV != nil { throw fail("invalid JSON in header: duplicate field `shape`", name) }; shapeV = v
            case "data_offsets": if offsetsV != nil { throw fail("invalid JSON in header: duplicate field `data_offsets`", name) }; offsetsV = v
            default: break  // unknown fields are ignored, as the reference does
            }
        }
        guard let dtypeV else { throw fail("invalid JSON in header: missing field `dtype`", name) }
        guard let shapeV else { throw fail("invalid JSON in header: missing field `shape`", name) }
        guard let offsetsV else { throw fail("invalid JSON in header: missing field `data_offsets`", name) }
        guard let ds = dtypeV.stringValue else { throw fail("invalid JSON in header: dtype is not a string", name) }
        guard let dtype = DType(header: ds) else {
            throw fail("unknown dtype '\(ds)' (expected one of \(DType.allCases.map(\.rawValue).joined(separator: ", ")))", name)
        }
        guard let dims = shapeV.arrayValue else { throw fail("invalid JSON in header: shape is not an array", name) }
        var shape: [UInt64] = []
        for d in dims {
            guard let u = d.uint64Value else {
                throw fail("invalid JSON in header: shape entry \(d.compact()) is not an integer in 0...2^64-1", name)
            }
            shape.append(u)
        }
        guard let offs = offsetsV.arrayValue, offs.count == 2 else {
            throw fail("invalid JSON in header: data_offsets must be an array of two integers", name)
        }
        guard let b = offs[0].uint64Value, let e = offs[1].uint64Value else {
            throw fail("invalid JSON in header: data_offsets entries must be integers in 0...2^64-1", name)
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, begin: b, end: e)
    }
}
