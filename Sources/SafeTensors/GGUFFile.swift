#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A GGUF file (llama.cpp's container, v2/v3), memory-mapped read-only: its metadata, its tensor
/// table, and each tensor's bytes. Every length and offset is bounds-checked against the file, so a
/// damaged file gives an error naming it, never a crash. What the bytes mean (block formats) is
/// for the caller.
public final class GGUFFile: @unchecked Sendable {
    public struct Tensor: Sendable {
        public let name: String
        /// ggml order: dims[0] is the fastest-varying (the reverse of numpy's shape).
        public let dims: [UInt64]
        public let type: UInt32
        public let offset: UInt64
        public var count: Int { dims.reduce(1) { $0 * Int(clamping: $1) } }
        /// numpy / safetensors order.
        public var shape: [UInt64] { dims.reversed() }
    }

    public var path: String { file.path }
    public let metadata: [(String, GGUFValue)]
    public let tensors: [Tensor]
    public let alignment: Int
    private let file: MappedFile
    private let base: UnsafeRawPointer
    private let length: Int
    private let dataStart: Int

    public static func isGGUF(_ path: String) -> Bool {
        guard let f = fopen(path, "rb") else { return false }
        defer { fclose(f) }
        var magic = [UInt8](repeating: 0, count: 4)
        return fread(&magic, 1, 4, f) == 4 && magic == Array("GGUF".utf8)
    }

    public init(path: String) throws {
        file = try MappedFile(path: path)
        guard file.size >= 24, let base = file.base else { throw FormatError(file: path, "truncated GGUF header (\(file.size) bytes)") }
        self.base = base
        length = Int(file.size)
        var r = Reader(base: base, count: length, path: path)
        guard try r.take(4).elementsEqual("GGUF".utf8) else { throw FormatError(file: path, "not a GGUF file (no GGUF magic)") }
        let version = try r.u32()
        guard version == 2 || version == 3 else { throw FormatError(file: path, "GGUF version \(version) is not supported (2 or 3)") }
        let nTensors = try r.u64(), nKV = try r.u64()
        guard nTensors < 10_000_000, nKV < 10_000_000 else { throw FormatError(file: path, "implausible tensor or metadata count") }
        var kv: [(String, GGUFValue)] = []
        var alignment: UInt64 = 32
        for _ in 0..<nKV {
            let key = try r.string()
            let value = try r.value(type: try r.u32())
            if key == "general.alignment", case let .uint32(a) = value { alignment = UInt64(a) }
            kv.append((key, value))
        }
        guard alignment > 0 && alignment.nonzeroBitCount == 1 else { throw FormatError(file: path, "general.alignment \(alignment) is not a power of two") }
        var ts: [Tensor] = []
        for _ in 0..<nTensors {
            let name = try r.string()
            let nd = try r.u32()
            guard nd <= 8 else { throw FormatError(file: path, tensor: name, "\(nd) dimensions") }
            var dims: [UInt64] = []
            for _ in 0..<nd { dims.append(try r.u64()) }
            guard dims.allSatisfy({ $0 < 1 << 40 }) else { throw FormatError(file: path, tensor: name, "implausible dimensions \(dims)") }
            var count: UInt64 = 1
            for d in dims {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o, p < 1 << 48 else { throw FormatError(file: path, tensor: name, "dimensions \(dims) hold too many elements") }
                count = p
            }
            ts.append(Tensor(name: name, dims: dims, type: try r.u32(), offset: try r.u64()))
        }
        self.alignment = Int(alignment)
        dataStart = (r.pos + self.alignment - 1) / self.alignment * self.alignment
        metadata = kv
        tensors = ts
    }

    public func tensor(_ name: String) -> Tensor? { tensors.first { $0.name == name } }
    public func value(_ key: String) -> GGUFValue? { metadata.first { $0.0 == key }?.1 }

    /// A tensor's `byteCount` bytes (the caller knows its type's size), checked to lie in the file.
    public func bytes(_ t: Tensor, byteCount: Int) throws -> UnsafeRawBufferPointer {
        guard t.offset < UInt64(length), byteCount >= 0, dataStart + Int(t.offset) + byteCount <= length else {
            throw FormatError(file: path, tensor: t.name, "data runs past the end of the file")
        }
        return UnsafeRawBufferPointer(start: base + dataStart + Int(t.offset), count: byteCount)
    }

    /// An F32 (type 0) or F16 (type 1) tensor's values, in file order.
    public func floats(_ t: Tensor) throws -> [Float] {
        let size: Int
        switch t.type {
        case 0: size = 4
        case 1: size = 2
        default: throw FormatError(file: path, tensor: t.name, "ggml type \(t.type) is not F32 or F16")
        }
        let n = t.count
        let b = try bytes(t, byteCount: n * size)
        var out = [Float](repeating: 0, count: n)
        out.withUnsafeMutableBufferPointer { Codec.decode(size == 4 ? .F32 : .F16, b.baseAddress!, count: n, into: $0.baseAddress!) }
        return out
    }

    private struct Reader {
        let base: UnsafeRawPointer
        let count: Int
        let path: String
        var pos = 0

        mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
            guard n >= 0, n <= count - pos else { throw FormatError(file: path, "truncated GGUF header") }
            defer { pos += n }
            return UnsafeRawBufferPointer(start: base + pos, count: n)
        }
        mutating func fixed<T: FixedWidthInteger>(_: T.Type) throws -> T {
            T(littleEndian: try take(MemoryLayout<T>.size).loadUnaligned(as: T.self))
        }
        mutating func u32() throws -> UInt32 { try fixed(UInt32.self) }
        mutating func u64() throws -> UInt64 { try fixed(UInt64.self) }
        mutating func string() throws -> String {
            let n = try u64()
            guard n <= UInt64(count - pos) else { throw FormatError(file: path, "truncated GGUF string") }
            return String(decoding: try take(Int(n)), as: UTF8.self)
        }
        mutating func value(type: UInt32, depth: Int = 0) throws -> GGUFValue {
            switch type {
            case 0: return .uint8(try fixed(UInt8.self))
            case 1: return .int8(try fixed(Int8.self))
            case 2: return .uint16(try fixed(UInt16.self))
            case 3: return .int16(try fixed(Int16.self))
            case 4: return .uint32(try fixed(UInt32.self))
            case 5: return .int32(try fixed(Int32.self))
            case 6: return .float32(Float(bitPattern: try fixed(UInt32.self)))
            case 7: return .bool(try fixed(UInt8.self) != 0)
            case 8: return .string(try string())
            case 10: return .uint64(try fixed(UInt64.self))
            case 11: return .int64(try fixed(Int64.self))
            case 12: return .float64(Double(bitPattern: try fixed(UInt64.self)))
            case 9:
                guard depth < 4 else { throw FormatError(file: path, "GGUF arrays nested too deep") }
                let inner = try u32(), n = try u64()
                guard n <= UInt64(count - pos) else { throw FormatError(file: path, "truncated GGUF array") }
                var items: [GGUFValue] = []
                items.reserveCapacity(Int(n))
                for _ in 0..<n { items.append(try value(type: inner, depth: depth + 1)) }
                return .array(inner, items)
            default: throw FormatError(file: path, "unknown GGUF value type \(type)")
            }
        }
    }
}
