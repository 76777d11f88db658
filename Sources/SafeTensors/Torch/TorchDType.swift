/// The element types torch.save writes, with the safetensors type each becomes.
public enum TorchDType: String, Sendable, Equatable {
    case float64, float32, float16, bfloat16, int64, int32, int16, int8, uint8, bool
    case complex64, complex128
    case float8_e4m3fn, float8_e5m2, float8_e4m3fnuz, float8_e5m2fnuz, float8_e8m0fnu
    case uint16, uint32, uint64
    /// Storage types wtool recognises but cannot represent (quantized, packed 4-bit...).
    case unsupported

    /// Bytes per element (1 for the unsupported marker, which is refused before use).
    public var size: Int {
        switch self {
        case .float64, .int64, .complex64, .uint64: return 8
        case .complex128: return 16
        case .float32, .int32, .uint32: return 4
        case .float16, .bfloat16, .int16, .uint16: return 2
        default: return 1
        }
    }

    /// The safetensors dtype holding the same bits, or nil (complex128, quantized storages).
    public var safetensors: DType? {
        switch self {
        case .float64: return .F64
        case .float32: return .F32
        case .float16: return .F16
        case .bfloat16: return .BF16
        case .int64: return .I64
        case .int32: return .I32
        case .int16: return .I16
        case .int8: return .I8
        case .uint8: return .U8
        case .bool: return .BOOL
        case .complex64: return .C64
        case .float8_e4m3fn: return .F8_E4M3
        case .float8_e5m2: return .F8_E5M2
        case .float8_e4m3fnuz: return .F8_E4M3FNUZ
        case .float8_e5m2fnuz: return .F8_E5M2FNUZ
        case .float8_e8m0fnu: return .F8_E8M0
        case .uint16: return .U16
        case .uint32: return .U32
        case .uint64: return .U64
        case .complex128, .unsupported: return nil
        }
    }

    /// `torch.<Name>Storage` (torch/storage.py `_dtype_to_storage_type_map`), name without "Storage".
    static let storageNames: [String: TorchDType] = [
        "Double": .float64, "Float": .float32, "Half": .float16, "BFloat16": .bfloat16,
        "Long": .int64, "Int": .int32, "Short": .int16, "Char": .int8, "Byte": .uint8, "Bool": .bool,
        "ComplexFloat": .complex64, "ComplexDouble": .complex128,
        "QInt8": .unsupported, "QUInt8": .unsupported, "QInt32": .unsupported,
        "QUInt4x2": .unsupported, "QUInt2x4": .unsupported,
    ]

    /// `torch.<dtype>` globals (the dtype argument of `_rebuild_tensor_v3`).
    static let dtypeNames: [String: TorchDType] = [
        "float64": .float64, "double": .float64, "float32": .float32, "float": .float32,
        "float16": .float16, "half": .float16, "bfloat16": .bfloat16,
        "int64": .int64, "long": .int64, "int32": .int32, "int": .int32, "int16": .int16, "short": .int16,
        "int8": .int8, "uint8": .uint8, "bool": .bool, "complex64": .complex64, "cfloat": .complex64,
        "complex128": .complex128, "cdouble": .complex128,
        "float8_e4m3fn": .float8_e4m3fn, "float8_e5m2": .float8_e5m2, "float8_e4m3fnuz": .float8_e4m3fnuz,
        "float8_e5m2fnuz": .float8_e5m2fnuz, "float8_e8m0fnu": .float8_e8m0fnu,
        "uint16": .uint16, "uint32": .uint32, "uint64": .uint64,
        "float4_e2m1fn_x2": .unsupported, "complex32": .unsupported, "chalf": .unsupported,
        "quint8": .unsupported, "qint8": .unsupported, "qint32": .unsupported, "quint4x2": .unsupported,
        "quint2x4": .unsupported, "bits8": .unsupported, "bits16": .unsupported,
    ]
}
