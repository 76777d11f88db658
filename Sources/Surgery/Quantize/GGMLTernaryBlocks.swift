/// llama.cpp's ternary super-block formats (256 elements, BitNet b1.58 style), as ggml's
/// `quantize_row_tq{1,2}_0_ref`: d = max |x| of the block, trit = roundf(x / d) in {-1, 0, 1}.
/// They reproduce an already-ternary tensor exactly (up to d's f16 rounding); on ordinary
/// weights they are very lossy (about 2 dB SQNR on Gaussian data).
enum GGMLTernaryBlocks {
    static let qk = 256

    /// Trits + 1 in {0, 1, 2}, and d.
    @inline(__always) static func trits(_ xb: UnsafePointer<Float>, _ q: inout [UInt8]) -> Float {
        var amax: Float = 0
        for j in 0..<qk { amax = max(amax, abs(xb[j])) }
        let id: Float = amax != 0 ? 1 / amax : 0
        for j in 0..<qk { q[j] = UInt8(clamping: roundAway(xb[j] * id) + 1) }
        return amax
    }

    // MARK: TQ2_0: qs:u8[64] (2 bits each), d:f16 — 66 bytes

    static func encodeTQ2_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var q = [UInt8](repeating: 0, count: qk)
        for b in 0..<(n / qk) {
            let o = out + b * 66
            let d = trits(x + b * qk, &q)
            // Per 128 elements, byte m holds elements m + 32k at bits 2k.
            for c in 0..<2 {
                for m in 0..<32 {
                    let e = c * 128 + m
                    let v = q[e] | q[e + 32] << 2 | q[e + 64] << 4 | q[e + 96] << 6
                    o.storeBytes(of: v, toByteOffset: c * 32 + m, as: UInt8.self)
                }
            }
            storeHalf(d, o + 64)
        }
    }

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

    // MARK: TQ1_0: qs:u8[48] (5 trits each), qh:u8[4] (4 trits each), d:f16 — 54 bytes

    /// Trits in base 3, first most significant, scaled so trit k decodes as ((u8)(b * 3^k) * 3) >> 8.
    @inline(__always) static func packTrits(_ q: [UInt8], _ first: Int, stride: Int, count: Int) -> UInt8 {
        var v: UInt16 = 0
        for k in 0..<count { v = v * 3 + UInt16(q[first + k * stride]) }
        if count == 4 { v *= 3 }  // the 4-trit bytes are padded so their first trit is the top one
        return UInt8((v * 256 + 242) / 243)
    }

    static func encodeTQ1_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var q = [UInt8](repeating: 0, count: qk)
        for b in 0..<(n / qk) {
            let o = out + b * 54
            let d = trits(x + b * qk, &q)
            for m in 0..<32 { o.storeBytes(of: packTrits(q, m, stride: 32, count: 5), toByteOffset: m, as: UInt8.self) }
            for m in 0..<16 { o.storeBytes(of: packTrits(q, 160 + m, stride: 16, count: 5), toByteOffset: 32 + m, as: UInt8.self) }
            for m in 0..<4 { o.storeBytes(of: packTrits(q, 240 + m, stride: 4, count: 4), toByteOffset: 48 + m, as: UInt8.self) }
            storeHalf(d, o + 52)
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
