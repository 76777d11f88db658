/// The element types of the safetensors format, in the reference's enum order (increasing
/// alignment), which is also the writer's layout key (descending).
public enum DType: String, CaseIterable, Sendable, Comparable {
    case BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ
    case I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64

    /// Position in the reference enum (huggingface/safetensors `enum Dtype`).
    public var order: Int { DType.allCases.firstIndex(of: self)! }
    public static func < (a: DType, b: DType) -> Bool { a.order < b.order }

    public var bits: Int {
        switch self {
        case .F4: return 4
        case .F6_E2M3, .F6_E3M2: return 6
        case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3, .F8_E8M0, .F8_E4M3FNUZ, .F8_E5M2FNUZ: return 8
        case .I16, .U16, .F16, .BF16: return 16
        case .I32, .U32, .F32: return 32
        case .C64, .F64, .I64, .U64: return 64
        }
    }

    /// Bytes per element for the byte-sized types; nil for sub-byte types.
    public var size: Int? { bits % 8 == 0 ? bits / 8 : nil }

    /// Types whose values wtool can decode to numbers (everything but sub-byte, complex and E8M0 scales).
    public var isNumeric: Bool {
        switch self {
        case .F4, .F6_E2M3, .F6_E3M2, .C64, .F8_E8M0, .F8_E4M3FNUZ, .F8_E5M2FNUZ: return false
        default: return true
        }
    }

    public var isFloatingPoint: Bool {
        switch self {
        case .F16, .BF16, .F32, .F64, .F8_E4M3, .F8_E5M2: return true
        default: return false
        }
    }

    /// Parses the exact, case-sensitive name used in headers.
    public init?(header: String) { self.init(rawValue: header) }

    /// Parses the lower-case names users type (`f32`, `bf16`, `float16`...).
    public init?(userName: String) {
        switch userName.lowercased() {
        case "f32", "float32", "fp32": self = .F32
        case "f16", "float16", "fp16", "half": self = .F16
        case "bf16", "bfloat16": self = .BF16
        case "f64", "float64", "fp64": self = .F64
        case "f8_e4m3", "float8_e4m3fn", "e4m3": self = .F8_E4M3
        case "f8_e5m2", "float8_e5m2", "e5m2": self = .F8_E5M2
        default: return nil
        }
    }
}
