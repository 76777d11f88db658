import SafeTensors

/// ggml tensor types wtool writes and reads, as one table of traits (like ggml's `type_traits`):
/// the type id in GGUF files, elements per block, bytes per block, and the row encoder/decoder.
/// Generic code (the GGUF writer, --dequantize, the fake format) goes through this table only.
public struct GGMLType: Sendable, Hashable {
    public typealias Encoder = @Sendable (UnsafePointer<Float>, Int, UnsafeMutableRawPointer) -> Void
    public typealias Decoder = @Sendable (UnsafeRawPointer, Int, UnsafeMutablePointer<Float>) -> Void
    /// One row of `n` values with its `n` importance weights (ggml's `quantize_row_*_impl`).
    public typealias WeightedEncoder = @Sendable (UnsafePointer<Float>, Int, UnsafePointer<Float>, UnsafeMutableRawPointer) -> Void

    public let name: String
    /// `enum ggml_type` value.
    public let id: UInt32
    public let blockSize: Int
    public let blockBytes: Int
    /// LlamaFileType for `general.file_type` when this is the main quantized type (nil: none).
    public let fileType: UInt32?
    let encode: Encoder
    let decode: Decoder
    /// nil: the type ignores importance weights (Q8_0, ternary, floats), as ggml does.
    let encodeWeighted: WeightedEncoder?

    init(name: String, id: UInt32, blockSize: Int, blockBytes: Int, fileType: UInt32?, encode: @escaping Encoder, decode: @escaping Decoder,
         weighted: WeightedEncoder? = nil) {
        self.name = name; self.id = id; self.blockSize = blockSize; self.blockBytes = blockBytes; self.fileType = fileType
        self.encode = encode; self.decode = decode; self.encodeWeighted = weighted
    }

    public static func == (a: GGMLType, b: GGMLType) -> Bool { a.id == b.id }
    public func hash(into h: inout Hasher) { h.combine(id) }

    public var isQuantized: Bool { blockSize > 1 }
    public var bitsPerWeight: Double { Double(blockBytes * 8) / Double(blockSize) }
    public func rowBytes(_ n: Int) -> Int { n / blockSize * blockBytes }

    /// Encodes `n` values (a multiple of the block size).
    public func encode(_ x: UnsafePointer<Float>, count n: Int, into out: UnsafeMutableRawPointer) { encode(x, n, out) }
    /// Encodes one row of `n` values weighted by an importance matrix's `n` column weights.
    public func encodeRow(_ x: UnsafePointer<Float>, count n: Int, weights qw: UnsafePointer<Float>, into out: UnsafeMutableRawPointer) {
        if let encodeWeighted { encodeWeighted(x, n, qw, out) } else { encode(x, n, out) }
    }
    /// Decodes `n` values (a multiple of the block size).
    public func decode(_ src: UnsafeRawPointer, count n: Int, into y: UnsafeMutablePointer<Float>) { decode(src, n, y) }

    // Plain float types, for tensors kept unquantized.
    public static let f32 = plain("f32", 0, .F32, fileType: 0)
    public static let f16 = plain("f16", 1, .F16, fileType: 1)
    public static let bf16 = plain("bf16", 30, .BF16, fileType: 32)

    public static let q8_0 = GGMLType(name: "q8_0", id: 8, blockSize: 32, blockBytes: 34, fileType: 7,
                                      encode: GGMLLegacyBlocks.encodeQ8_0, decode: GGMLLegacyBlocks.decodeQ8_0)
    public static let q4_0 = GGMLType(name: "q4_0", id: 2, blockSize: 32, blockBytes: 18, fileType: 2,
                                      encode: GGMLLegacyBlocks.encodeQ4_0, decode: GGMLLegacyBlocks.decodeQ4_0,
                                      weighted: GGMLWeightedBlocks.encodeQ4_0)
    public static let q4_1 = GGMLType(name: "q4_1", id: 3, blockSize: 32, blockBytes: 20, fileType: 3,
                                      encode: GGMLLegacyBlocks.encodeQ4_1, decode: GGMLLegacyBlocks.decodeQ4_1,
                                      weighted: GGMLWeightedBlocks.encodeQ4_1)
    public static let q5_0 = GGMLType(name: "q5_0", id: 6, blockSize: 32, blockBytes: 22, fileType: 8,
                                      encode: GGMLLegacyBlocks.encodeQ5_0, decode: GGMLLegacyBlocks.decodeQ5_0,
                                      weighted: GGMLWeightedBlocks.encodeQ5_0)
    public static let q5_1 = GGMLType(name: "q5_1", id: 7, blockSize: 32, blockBytes: 24, fileType: 9,
                                      encode: GGMLLegacyBlocks.encodeQ5_1, decode: GGMLLegacyBlocks.decodeQ5_1,
                                      weighted: GGMLWeightedBlocks.encodeQ5_1)
    public static let q4_k = GGMLType(name: "q4_k", id: 12, blockSize: 256, blockBytes: 144, fileType: 14,
                                      encode: GGMLKQuantBlocks.encodeQ4_K, decode: GGMLKQuantBlocks.decodeQ4_K,
                                      weighted: GGMLWeightedBlocks.encodeQ4_K)
    public static let q2_k = GGMLType(name: "q2_k", id: 10, blockSize: 256, blockBytes: 84, fileType: 10,
                                      encode: GGMLKQuantBlocks.encodeQ2_K, decode: GGMLKQuantBlocks.decodeQ2_K,
                                      weighted: GGMLWeightedBlocks.encodeQ2_K)
    public static let q3_k = GGMLType(name: "q3_k", id: 11, blockSize: 256, blockBytes: 110, fileType: 11,
                                      encode: GGMLKQuantBlocks.encodeQ3_K, decode: GGMLKQuantBlocks.decodeQ3_K,
                                      weighted: GGMLWeightedBlocks.encodeQ3_K)
    public static let q5_k = GGMLType(name: "q5_k", id: 13, blockSize: 256, blockBytes: 176, fileType: 16,
                                      encode: GGMLKQuantBlocks.encodeQ5_K, decode: GGMLKQuantBlocks.decodeQ5_K,
                                      weighted: GGMLWeightedBlocks.encodeQ5_K)
    public static let q6_k = GGMLType(name: "q6_k", id: 14, blockSize: 256, blockBytes: 210, fileType: 18,
                                      encode: GGMLKQuantBlocks.encodeQ6_K, decode: GGMLKQuantBlocks.decodeQ6_K,
                                      weighted: GGMLWeightedBlocks.encodeQ6_K)
    public static let tq1_0 = GGMLType(name: "tq1_0", id: 34, blockSize: 256, blockBytes: 54, fileType: 36,
                                       encode: GGMLTernaryBlocks.encodeTQ1_0, decode: GGMLTernaryBlocks.decodeTQ1_0)
    public static let tq2_0 = GGMLType(name: "tq2_0", id: 35, blockSize: 256, blockBytes: 66, fileType: 37,
                                       encode: GGMLTernaryBlocks.encodeTQ2_0, decode: GGMLTernaryBlocks.decodeTQ2_0)

    public static let quantized: [GGMLType] = [q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, tq1_0, tq2_0]
    public static let all: [GGMLType] = [f32, f16, bf16] + quantized

    public static func named(_ s: String) -> GGMLType? { all.first { $0.name == s.lowercased() } }
    public static func withID(_ id: UInt32) -> GGMLType? { all.first { $0.id == id } }

    // Types wtool decodes (GGUF import, --dequantize) but never writes.
    static func decodeOnly(_ name: String, _ id: UInt32, _ blockSize: Int, _ blockBytes: Int, _ decode: @escaping Decoder) -> GGMLType {
        GGMLType(name: name, id: id, blockSize: blockSize, blockBytes: blockBytes, fileType: nil,
                 encode: { _, _, _ in preconditionFailure("\(name) is decoded, never encoded") }, decode: decode)
    }
    public static let readOnly: [GGMLType] = [
        decodeOnly("iq2_xxs", 16, 256, 66, GGMLIQuantBlocks.decodeIQ2_XXS), decodeOnly("iq2_xs", 17, 256, 74, GGMLIQuantBlocks.decodeIQ2_XS),
        decodeOnly("iq3_xxs", 18, 256, 98, GGMLIQuantBlocks.decodeIQ3_XXS), decodeOnly("iq1_s", 19, 256, 50, GGMLIQuantBlocks.decodeIQ1_S),
        decodeOnly("iq4_nl", 20, 32, 18, GGMLIQuantBlocks.decodeIQ4_NL), decodeOnly("iq3_s", 21, 256, 110, GGMLIQuantBlocks.decodeIQ3_S),
        decodeOnly("iq2_s", 22, 256, 82, GGMLIQuantBlocks.decodeIQ2_S), decodeOnly("iq4_xs", 23, 256, 136, GGMLIQuantBlocks.decodeIQ4_XS),
        decodeOnly("iq1_m", 29, 256, 56, GGMLIQuantBlocks.decodeIQ1_M), decodeOnly("mxfp4", 39, 32, 17, GGMLIQuantBlocks.decodeMXFP4),
        decodeOnly("nvfp4", 40, 64, 36, GGMLIQuantBlocks.decodeNVFP4),
        GGMLType(name: "f64", id: 28, blockSize: 1, blockBytes: 8, fileType: nil, encode: { _, _, _ in preconditionFailure("f64 is decoded, never encoded") },
                 decode: { s, n, y in Codec.decode(.F64, s, count: n, into: y) }),
    ]
    /// Every type wtool can decode: what it writes and `readOnly`.
    public static let decodable: [GGMLType] = all + readOnly
    public static func decodable(id: UInt32) -> GGMLType? { decodable.first { $0.id == id } }

    /// The safetensors dtype of a plain type.
    public var plainDType: DType? {
        switch id { case 0: return .F32; case 1: return .F16; case 30: return .BF16; default: return nil }
    }

    private static func plain(_ name: String, _ id: UInt32, _ dtype: DType, fileType: UInt32) -> GGMLType {
        GGMLType(name: name, id: id, blockSize: 1, blockBytes: dtype.size!, fileType: fileType,
                 encode: { x, n, out in Codec.encode(x, count: n, as: dtype, into: out) },
                 decode: { s, n, y in Codec.decode(dtype, s, count: n, into: y) })
    }
}
