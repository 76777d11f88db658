import CQuant
import SafeTensors

/// The `pack-quantized` and `float-quantized` layouts of compressed-tensors (the safetensors
/// format vLLM and llm-compressor use), vllm-project/compressed-tensors `pack_to_int32`:
/// signed b-bit values are offset by 2^(b-1) to unsigned and packed as one dense little-endian
/// bit stream per row (element i at bits [i·b, i·b + b), LSB first, crossing word boundaries),
/// ceil(len·b/32) int32 words per row, the tail zero-padded. For b = 4 and 8 this equals the older
/// "pack factor" layout (32/b values per word).
public enum CompressedTensorsLayout {
    /// Packs `rows` rows of `cols` signed values along the last dimension (the bit stream is written
    /// by the C kernel that the streamed RTN path packs with, `wt_pack_codes`).
    public static func pack(_ q: [Int8], rows: Int, cols: Int, bits: Int) -> [Int32] {
        let words = packedWords(cols, bits: bits)
        var out = [Int32](repeating: 0, count: rows * words)
        guard rows * words > 0 else { return out }
        q.withUnsafeBufferPointer { qp in
            out.withUnsafeMutableBytes { o in
                wt_pack_codes(qp.baseAddress!, rows, cols, Int32(bits), o.baseAddress!.assumingMemoryBound(to: UInt32.self), words)
            }
        }
        return out
    }

    /// Packs along the first dimension (zero points): the transpose, packed, transposed back.
    public static func packColumns(_ q: [Int8], rows: Int, cols: Int, bits: Int) -> [Int32] {
        var t = [Int8](repeating: 0, count: q.count)
        for r in 0..<rows { for c in 0..<cols { t[c * rows + r] = q[r * cols + c] } }
        let packed = pack(t, rows: cols, cols: rows, bits: bits)
        let words = packedWords(rows, bits: bits)
        var out = [Int32](repeating: 0, count: packed.count)
        for c in 0..<cols { for w in 0..<words { out[w * cols + c] = packed[c * words + w] } }
        return out
    }

    public static func unpack(_ packed: UnsafeRawBufferPointer, rows: Int, cols: Int, bits: Int) -> [Int8] {
        let words = packedWords(cols, bits: bits)
        let offset = 1 << (bits - 1), mask = UInt32((1 << bits) - 1)
        var out = [Int8](repeating: 0, count: rows * cols)
        func word(_ i: Int) -> UInt32 { UInt32(littleEndian: packed.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)) }
        for r in 0..<rows {
            for c in 0..<cols {
                let bit = c * bits, w = r * words + bit / 32, shift = bit % 32
                var u = word(w) >> UInt32(shift)
                if shift + bits > 32 { u |= word(w + 1) << UInt32(32 - shift) }
                out[r * cols + c] = Int8(Int(u & mask) - offset)
            }
        }
        return out
    }

    /// Unpacks zero points packed along the first dimension.
    public static func unpackColumns(_ packed: UnsafeRawBufferPointer, rows: Int, cols: Int, bits: Int) -> [Int8] {
        let words = packedWords(rows, bits: bits)
        var t = [UInt8](repeating: 0, count: words * cols * 4)
        for w in 0..<words {
            for c in 0..<cols {
                for b in 0..<4 { t[(c * words + w) * 4 + b] = packed[(w * cols + c) * 4 + b] }
            }
        }
        let cm = t.withUnsafeBytes { unpack($0, rows: cols, cols: rows, bits: bits) }
        var out = [Int8](repeating: 0, count: rows * cols)
        for c in 0..<cols { for r in 0..<rows { out[r * cols + c] = cm[c * rows + r] } }
        return out
    }

    public static func packedWords(_ count: Int, bits: Int) -> Int { (count * bits + 31) / 32 }

    /// The `quantization_config` that goes into config.json (keys as `ModelCompressor` writes them).
    public static func config(format: String, bits: Int, type: String, symmetric: Bool, strategy: String,
                              groupSize: Int?, ignore: [String]) -> JSONValue {
        let weights = JSONValue.object([
            ("actorder", .null), ("block_structure", .null), ("dynamic", .bool(false)),
            ("group_size", groupSize.map { .int($0) } ?? .null), ("num_bits", .int(bits)),
            ("observer", .string("memoryless_minmax")), ("observer_kwargs", .object([])),
            ("scale_dtype", .null), ("strategy", .string(strategy)), ("symmetric", .bool(symmetric)),
            ("type", .string(type)), ("zp_dtype", .null),
        ])
        let group = JSONValue.object([
            ("format", .string(format)), ("input_activations", .null), ("output_activations", .null),
            ("targets", .array([.string("Linear")])), ("weights", weights),
        ])
        return .object([
            ("config_groups", .object([("group_0", group)])),
            ("format", .string(format)),
            ("global_compression_ratio", .null),
            ("ignore", .array(ignore.map { .string($0) })),
            ("kv_cache_scheme", .null),
            ("quant_method", .string("compressed-tensors")),
            ("quantization_status", .string("compressed")),
            ("sparsity_config", .object([])),
            ("transform_config", .object([])),
            ("version", .string("0.20.0")),
        ])
    }
}
