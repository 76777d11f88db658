import CQuant

/// llama.cpp's 32-element block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), encoded exactly as
/// ggml's `quantize_row_*_ref` and gguf-py's `gguf.quants` do: the quants are computed with the
/// f32 scale and its f16 rounding is what is stored. Rounding differs per type on purpose:
/// Q8_0 uses C `roundf` (ties away from zero), the 4/5-bit types truncate `v + 0.5`.
/// Every function takes whole blocks (`n % 32 == 0`); the shared pieces below serve the
/// importance-weighted encoders too.
enum GGMLLegacyBlocks {
    static let qk = 32

    // The encoders and decoders are C (Sources/CQuant: an AVX2 path and a portable one with the
    // same bytes), to run at ggml's own speed; these wrappers give them GGMLType's signatures.
    // Q8_0: d:f16, qs:int8[32]. Q4_0/Q5_0: d = (signed value of largest magnitude) / -(levels/2).
    // Q4_1/Q5_1: d = (max - min) / (levels - 1), m = min. Q5 types keep bit 4 of each code in a u32.
    static func encodeQ8_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) { wt_encode_q8_0(x, n, out) }
    static func encodeQ4_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) { wt_encode_q4_0(x, n, out) }
    static func encodeQ4_1(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) { wt_encode_q4_1(x, n, out) }
    static func encodeQ5_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) { wt_encode_q5_0(x, n, out) }
    static func encodeQ5_1(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) { wt_encode_q5_1(x, n, out) }

    static func decodeQ8_0(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) { wt_decode_q8_0(src, n, y) }
    static func decodeQ4_0(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) { wt_decode_q4_0(src, n, y) }
    static func decodeQ4_1(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) { wt_decode_q4_1(src, n, y) }
    static func decodeQ5_0(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) { wt_decode_q5_0(src, n, y) }
    static func decodeQ5_1(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) { wt_decode_q5_1(src, n, y) }

    // MARK: shared pieces

    /// Byte j holds q[j] in its low nibble and q[j + 16] in its high one.
    @inline(__always) static func packNibbles(_ q: [UInt8], _ o: UnsafeMutableRawPointer) {
        for j in 0..<16 { o.storeBytes(of: (q[j] & 15) | (q[j + 16] << 4), toByteOffset: j, as: UInt8.self) }
    }

    /// Bit j of one little-endian u32 is bit 4 of q[j].
    @inline(__always) static func storeHighBits(_ q: [UInt8], _ o: UnsafeMutableRawPointer) {
        var qh: UInt32 = 0
        for j in 0..<qk { qh |= UInt32((q[j] >> 4) & 1) << UInt32(j) }
        o.storeBytes(of: qh.littleEndian, toByteOffset: 0, as: UInt32.self)
    }
}

// MARK: - scalar helpers shared by the block formats

/// f32 -> f16 (round to nearest even, like ggml and numpy), stored little-endian.
@inline(__always) func storeHalf(_ v: Float, _ o: UnsafeMutableRawPointer) {
    o.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: 0, as: UInt16.self)
}

@inline(__always) func loadHalf(_ s: UnsafeRawPointer) -> Float {
    Float(Float16(bitPattern: UInt16(littleEndian: s.loadUnaligned(as: UInt16.self))))
}

/// C's `(int)v` for the small values the encoders produce; NaN (only from non-finite input) gives 0.
@inline(__always) func truncate(_ v: Float) -> Int {
    v.isNaN ? 0 : Int(max(-1e9, min(1e9, v)))
}

/// ggml's `nearest_int`: nearest, ties to even, by its own trick (adding 1.5 * 2^23 leaves the
/// rounded integer in the low mantissa bits), which needs no libm call; outside ggml's asserted
/// range |v| <= 4194303, rounding and clamping instead.
@inline(__always) func nearestInt(_ v: Float) -> Int {
    if abs(v) <= 4194303 { return Int((v + 12582912).bitPattern & 0x007F_FFFF) - 0x0040_0000 }
    return truncate(v.rounded(.toNearestOrEven))
}
