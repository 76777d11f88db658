import CQuant

/// llama.cpp's ternary super-block formats (256 elements, BitNet b1.58 style), as ggml's
/// `quantize_row_tq{1,2}_0_ref`: d = max |x| of the block, trit = roundf(x / d) in {-1, 0, 1}.
/// They reproduce an already-ternary tensor exactly (up to d's f16 rounding); on ordinary
/// weights they are very lossy (about 2 dB SQNR on Gaussian data).
enum GGMLTernaryBlocks {
    static let qk = 256

    // The encoders are C (Sources/CQuant: AVX2 and portable paths with the same bytes).
    // TQ2_0: qs:u8[64] (2 bits each; per 128 elements byte m holds elements m + 32k at bits 2k), d:f16 — 66 bytes.
    // TQ1_0: qs:u8[48] (5 trits each), qh:u8[4] (4 trits each), d:f16 — 54 bytes; trits in base 3,
    // first most significant, scaled so trit k decodes as ((u8)(b * 3^k) * 3) >> 8.
    static func encodeTQ2_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) { wt_encode_tq2_0(x, n, out) }
    static func encodeTQ1_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) { wt_encode_tq1_0(x, n, out) }

    static func decodeTQ2_0(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 66, yb = y + b * qk
            let d = loadHalf(s + 64)
            for c in 0..<2 {
                for m in 0..<32 {
                    let v = s.load(fromByteOffset: c * 32 + m, as: UInt8.self)
                    for k in 0..<4 { yb[c * 128 + k * 32 + m] = d * Float(Int((v >> UInt8(2 * k)) & 3) - 1) }
                }
            }
        }
    }

    @inline(__always) static func trit(_ byte: UInt8, _ k: Int) -> Float {
        let pow3: [UInt8] = [1, 3, 9, 27, 81]
        let shifted = byte &* pow3[k]
        return Float(Int((UInt16(shifted) * 3) >> 8) - 1)
    }

    static func decodeTQ1_0(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 54, yb = y + b * qk
            let d = loadHalf(s + 52)
            for m in 0..<32 {
                let v = s.load(fromByteOffset: m, as: UInt8.self)
                for k in 0..<5 { yb[m + 32 * k] = d * trit(v, k) }
            }
            for m in 0..<16 {
                let v = s.load(fromByteOffset: 32 + m, as: UInt8.self)
                for k in 0..<5 { yb[160 + m + 16 * k] = d * trit(v, k) }
            }
            for m in 0..<4 {
                let v = s.load(fromByteOffset: 48 + m, as: UInt8.self)
                for k in 0..<4 { yb[240 + m + 4 * k] = d * trit(v, k) }
            }
        }
    }
}
