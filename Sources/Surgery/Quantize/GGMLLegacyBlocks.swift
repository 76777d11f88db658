/// llama.cpp's 32-element block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), encoded exactly as
/// ggml's `quantize_row_*_ref` and gguf-py's `gguf.quants` do: the quants are computed with the
/// f32 scale and its f16 rounding is what is stored. Rounding differs per type on purpose:
/// Q8_0 uses C `roundf` (ties away from zero), the 4/5-bit types truncate `v + 0.5`.
/// Every function takes whole blocks (`n % 32 == 0`).
enum GGMLLegacyBlocks {
    static let qk = 32

    // MARK: Q8_0: d:f16, qs:int8[32]

    static func encodeQ8_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 34
            var amax: Float = 0
            for j in 0..<qk { amax = max(amax, abs(xb[j])) }
            let d = amax / 127
            let id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, o)
            for j in 0..<qk { o.storeBytes(of: Int8(truncatingIfNeeded: roundAway(xb[j] * id)), toByteOffset: 2 + j, as: Int8.self) }
        }
    }

    static func decodeQ8_0(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 34, yb = y + b * qk
            let d = loadHalf(s)
            for j in 0..<qk { yb[j] = d * Float(s.load(fromByteOffset: 2 + j, as: Int8.self)) }
        }
    }

    // MARK: Q4_0 / Q5_0: symmetric, d = (signed value of largest magnitude) / -(levels/2)

    static func encodeQ4_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var q = [UInt8](repeating: 0, count: qk)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 18
            let d = signedMax(xb) / -8
            let id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, o)
            for j in 0..<qk { q[j] = UInt8(clamping: min(15, truncate(xb[j] * id + 8.5))) }
            packNibbles(q, o + 2)
        }
    }

    static func decodeQ4_0(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 18, yb = y + b * qk
            let d = loadHalf(s)
            for j in 0..<16 {
                let v = s.load(fromByteOffset: 2 + j, as: UInt8.self)
                yb[j] = d * Float(Int(v & 15) - 8)
                yb[j + 16] = d * Float(Int(v >> 4) - 8)
            }
        }
    }

    static func encodeQ5_0(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var q = [UInt8](repeating: 0, count: qk)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 22
            let d = signedMax(xb) / -16
            let id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, o)
            for j in 0..<qk { q[j] = UInt8(clamping: min(31, truncate(xb[j] * id + 16.5))) }
            storeHighBits(q, o + 2)
            packNibbles(q, o + 6)
        }
    }

    static func decodeQ5_0(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 22, yb = y + b * qk
            let d = loadHalf(s)
            let qh = s.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            for j in 0..<16 {
                let v = s.load(fromByteOffset: 6 + j, as: UInt8.self)
                let lo = Int(v & 15) | Int((qh >> UInt32(j)) & 1) << 4
                let hi = Int(v >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
                yb[j] = d * Float(lo - 16)
                yb[j + 16] = d * Float(hi - 16)
            }
        }
    }

    // MARK: Q4_1 / Q5_1: affine, d = (max - min) / (levels - 1), m = min

    static func encodeQ4_1(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var q = [UInt8](repeating: 0, count: qk)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 20
            let (lo, hi) = minMax(xb)
            let d = (hi - lo) / 15
            let id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, o)
            storeHalf(lo, o + 2)
            for j in 0..<qk { q[j] = UInt8(clamping: min(15, truncate((xb[j] - lo) * id + 0.5))) }
            packNibbles(q, o + 4)
        }
    }

    static func decodeQ4_1(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 20, yb = y + b * qk
            let d = loadHalf(s), m = loadHalf(s + 2)
            for j in 0..<16 {
                let v = s.load(fromByteOffset: 4 + j, as: UInt8.self)
                yb[j] = d * Float(v & 15) + m
                yb[j + 16] = d * Float(v >> 4) + m
            }
        }
    }

    static func encodeQ5_1(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var q = [UInt8](repeating: 0, count: qk)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 24
            let (lo, hi) = minMax(xb)
            let d = (hi - lo) / 31
            let id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, o)
            storeHalf(lo, o + 2)
            for j in 0..<qk { q[j] = UInt8(clamping: min(31, truncate((xb[j] - lo) * id + 0.5))) }
            storeHighBits(q, o + 4)
            packNibbles(q, o + 8)
        }
    }

    static func decodeQ5_1(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 24, yb = y + b * qk
            let d = loadHalf(s), m = loadHalf(s + 2)
            let qh = s.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            for j in 0..<16 {
                let v = s.load(fromByteOffset: 8 + j, as: UInt8.self)
                let lo = UInt32(v & 15) | ((qh >> UInt32(j)) & 1) << 4
                let hi = UInt32(v >> 4) | ((qh >> UInt32(j + 16)) & 1) << 4
                yb[j] = d * Float(lo) + m
                yb[j + 16] = d * Float(hi) + m
            }
        }
    }

    // MARK: shared pieces

    /// The value of largest magnitude, keeping its sign (the first one on ties, like ggml).
    @inline(__always) static func signedMax(_ xb: UnsafePointer<Float>) -> Float {
        var amax: Float = 0, mx: Float = 0
        for j in 0..<qk where amax < abs(xb[j]) { amax = abs(xb[j]); mx = xb[j] }
        return mx
    }

    @inline(__always) static func minMax(_ xb: UnsafePointer<Float>) -> (Float, Float) {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        // ggml's strict comparisons: of +0.0 and -0.0 the first seen stays (Swift's max(+0, -0)
        // would return -0.0 and flip the sign of a stored zero scale).
        for j in 0..<qk {
            if xb[j] < lo { lo = xb[j] }
            if xb[j] > hi { hi = xb[j] }
        }
        return (lo, hi)
    }

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

/// C's `roundf` / `lroundf`: nearest, ties away from zero. Written as truncation plus a carry on the
/// exact remainder (v - trunc(v) is exact in f32), which vectorises where libm's roundf does not.
@inline(__always) func roundAway(_ v: Float) -> Int {
    let t = truncate(v)
    let frac = v - Float(t)
    return t + (frac >= 0.5 ? 1 : 0) - (frac <= -0.5 ? 1 : 0)
}

/// ggml's `nearest_int`: nearest, ties to even, by its own trick (adding 1.5 * 2^23 leaves the
/// rounded integer in the low mantissa bits), which needs no libm call; outside ggml's asserted
/// range |v| <= 4194303, rounding and clamping instead.
@inline(__always) func nearestInt(_ v: Float) -> Int {
    if abs(v) <= 4194303 { return Int((v + 12582912).bitPattern & 0x007F_FFFF) - 0x0040_0000 }
    return truncate(v.rounded(.toNearestOrEven))
}
