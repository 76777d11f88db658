/// A GGUF metadata value (ggml docs/gguf.md, `gguf_type`), read and written little-endian.
public indirect enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    /// Element type id and elements (all of that type).
    case array(UInt32, [GGUFValue])

    public var typeID: UInt32 {
        switch self {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }

    /// The value as an integer, when it is one.
    public var integer: Int? {
        switch self {
        case let .uint8(v): return Int(v)
        case let .int8(v): return Int(v)
        case let .uint16(v): return Int(v)
        case let .int16(v): return Int(v)
        case let .uint32(v): return Int(v)
        case let .int32(v): return Int(v)
        case let .uint64(v): return Int(exactly: v)
        case let .int64(v): return Int(v)
        default: return nil
        }
    }

    public var string: String? { if case let .string(s) = self { return s }; return nil }

    /// Appends the value's bytes (without its type id).
    public func encode(into out: inout [UInt8]) {
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        switch self {
        case let .uint8(v): put(v)
        case let .int8(v): put(v)
        case let .uint16(v): put(v)
        case let .int16(v): put(v)
        case let .uint32(v): put(v)
        case let .int32(v): put(v)
        case let .float32(v): put(v.bitPattern)
        case let .bool(v): put(UInt8(v ? 1 : 0))
        case let .string(s): put(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8)
        case let .uint64(v): put(v)
        case let .int64(v): put(v)
        case let .float64(v): put(v.bitPattern)
        case let .array(type, items):
            put(type)
            put(UInt64(items.count))
            for item in items { item.encode(into: &out) }
        }
    }
}
