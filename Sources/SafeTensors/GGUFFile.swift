#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A GGUF file (llama.cpp's container, v2/v3), read for its tensor table: enough to take
/// statistics such as llama.cpp's imatrix (`<name>.in_sum2`, `<name>.counts`). Metadata values are
/// parsed only to be skipped; every length is bounds-checked against the file.
public final class GGUFFile: @unchecked Sendable {
    public struct Tensor: Sendable {
        public let name: String
        /// ggml order: dims[0] is the fastest-varying (the reverse of numpy's shape).
        public let dims: [UInt64]
        public let type: UInt32
        public let offset: UInt64
        public var count: Int { dims.reduce(1) { $0 * Int(clamping: $1) } }
    }

    public let path: String
    public let tensors: [Tensor]
    private let bytes: [UInt8]
    private let dataStart: Int

    public static func isGGUF(_ path: String) -> Bool {
        guard let f = fopen(path, "rb") else { return false }
        defer { fclose(f) }
        var magic = [UInt8](repeating: 0, count: 4)
        return fread(&magic, 1, 4, f) == 4 && magic == Array("GGUF".utf8)
    }

    public init(path: String) throws {
        self.path = path
        bytes = try FileSystem.readAll(path)
        var r = Reader(bytes: bytes, path: path)
        guard Array(try r.take(4)) == Array("GGUF".utf8) else { throw FormatError(file: path, "not a GGUF file (no GGUF magic)") }
        let version = try r.u32()
        guard version == 2 || version == 3 else { throw FormatError(file: path, "GGUF version \(version) is not supported (2 or 3)") }
        let nTensors = try r.u64(), nKV = try r.u64()
        guard nTensors < 10_000_000, nKV < 10_000_000 else { throw FormatError(file: path, "implausible tensor or metadata count") }
        var alignment: UInt64 = 32
        for _ in 0..<nKV {
            let key = try r.string()
            let type = try r.u32()
            if key == "general.alignment" && type == 4 { alignment = UInt64(try r.u32()); continue }
            try r.skipValue(type)
        }
        guard alignment > 0 && alignment.nonzeroBitCount == 1 else { throw FormatError(file: path, "general.alignment \(alignment) is not a power of two") }
        var ts: [Tensor] = []
        for _ in 0..<nTensors {
            let name = try r.string()
            let nd = try r.u32()
            guard nd <= 8 else { throw FormatError(file: path, tensor: name, "\(nd) dimensions") }
            var dims: [UInt64] = []
            for _ in 0..<nd { dims.append(try r.u64()) }
            ts.append(Tensor(name: name, dims: dims, type: try r.u32(), offset: try r.u64()))
        }
        let a = Int(alignment)
        dataStart = (r.pos + a - 1) / a * a
        tensors = ts
    }

    public func tensor(_ name: String) -> Tensor? { tensors.first { $0.name == name } }

    /// An F32 (type 0) or F16 (type 1) tensor's values, in file order.
    public func floats(_ t: Tensor) throws -> [Float] {
        let size: Int
        switch t.type {
        case 0: size = 4
        case 1: size = 2
        default: throw FormatError(file: path, tensor: t.name, "ggml type \(t.type) is not F32 or F16")
        }
        let start = dataStart + Int(clamping: t.offset), n = t.count
        guard t.offset < UInt64(Int.max), start + n * size <= bytes.count else {
            throw FormatError(file: path, tensor: t.name, "data runs past the end of the file")
        }
        var out = [Float](repeating: 0, count: n)
        bytes.withUnsafeBytes { b in
            out.withUnsafeMutableBufferPointer { Codec.decode(size == 4 ? .F32 : .F16, b.baseAddress! + start, count: n, into: $0.baseAddress!) }
        }
        return out
    }

    private struct Reader {
        let bytes: [UInt8]
        let path: String
        var pos = 0
        init(bytes: [UInt8], path: String) { self.bytes = bytes; self.path = path }

        mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
            guard n >= 0, pos + n <= bytes.count else { throw FormatError(file: path, "truncated GGUF header") }
            defer { pos += n }
            return bytes[pos..<(pos + n)]
        }
        mutating func u32() throws -> UInt32 { try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) } }
        mutating func u64() throws -> UInt64 { try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) } }
        mutating func string() throws -> String {
            let n = try u64()
            guard n <= UInt64(bytes.count) else { throw FormatError(file: path, "truncated GGUF string") }
            return String(decoding: try take(Int(n)), as: UTF8.self)
        }
        mutating func skipValue(_ type: UInt32) throws {
            switch type {
            case 0, 1, 7: _ = try take(1)
            case 2, 3: _ = try take(2)
            case 4, 5, 6: _ = try take(4)
            case 10, 11, 12: _ = try take(8)
            case 8: _ = try string()
            case 9:
                let inner = try u32(), n = try u64()
                guard n <= UInt64(bytes.count) else { throw FormatError(file: path, "truncated GGUF array") }
                for _ in 0..<n { try skipValue(inner) }
            default: throw FormatError(file: path, "unknown GGUF value type \(type)")
            }
        }
    }
}
