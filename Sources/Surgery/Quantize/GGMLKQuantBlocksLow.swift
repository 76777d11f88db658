/// The K-quant super-blocks the llama-quantize mixes add to Q4_K/Q6_K: Q2_K, Q3_K and Q5_K, ported
/// from ggml's reference encoders without an importance matrix (`quantize_row_q2_K_ref`,
/// `quantize_row_q3_K_ref`, `quantize_row_q5_K_ref`), byte for byte.
extension GGMLKQuantBlocks {
    // MARK: Q2_K: scales:u8[16] (4-bit scale | 4-bit min << 4), qs:u8[64], d:f16, dmin:f16 — 84 bytes

    static func encodeQ2_K(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var L = [UInt8](repeating: 0, count: qk)
        var w = [Float](repeating: 0, count: qk)
        var scales = [Float](repeating: 0, count: 16), mins = [Float](repeating: 0, count: 16)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 84
            var maxScale: Float = 0, maxMin: Float = 0
            for l in 0..<qk { w[l] = abs(xb[l]) }
            for half in 0..<2 {   // sixteen sub-blocks of 16: two groups of eight lanes
                let r = w.withUnsafeBufferPointer { wp in
                    L.withUnsafeMutableBufferPointer {
                        affineSearch8(xb + 128 * half, 16, nmax: 3, weights: wp.baseAddress! + 128 * half, levels: $0.baseAddress! + 128 * half,
                                      rmin: -0.5, rdelta: 0.1, nstep: 15, absoluteError: true)
                    }
                }
                for k in 0..<8 { scales[8 * half + k] = r.scale[k]; mins[8 * half + k] = r.negMin[k] }
            }
            for j in 0..<16 {
                if scales[j] > maxScale { maxScale = scales[j] }
                if mins[j] > maxMin { maxMin = mins[j] }
            }
            var packed = [UInt8](repeating: 0, count: 16)
            if maxScale > 0 {
                let iscale: Float = 15 / maxScale
                for j in 0..<16 { packed[j] = UInt8(truncatingIfNeeded: nearestInt(iscale * scales[j])) }
                storeHalf(maxScale / 15, o + 80)
            } else {
                storeHalf(0, o + 80)
            }
            if maxMin > 0 {
                let iscale: Float = 15 / maxMin
                for j in 0..<16 { packed[j] |= UInt8(truncatingIfNeeded: nearestInt(iscale * mins[j]) << 4) }
                storeHalf(maxMin / 15, o + 82)
            } else {
                storeHalf(0, o + 82)
            }
            for j in 0..<16 { o.storeBytes(of: packed[j], toByteOffset: j, as: UInt8.self) }
            let d = loadHalf(o + 80), dmin = loadHalf(o + 82)
            for j in 0..<16 {
                let dj = d * Float(packed[j] & 0xF)
                if dj == 0 { continue }
                let dm = dmin * Float(packed[j] >> 4)
                for i in 0..<16 { L[16 * j + i] = UInt8(max(0, min(3, nearestInt((xb[16 * j + i] + dm) / dj)))) }
            }
            for c in 0..<2 {
                for l in 0..<32 {
                    let e = 128 * c + l
                    o.storeBytes(of: L[e] | (L[e + 32] << 2) | (L[e + 64] << 4) | (L[e + 96] << 6), toByteOffset: 16 + 32 * c + l, as: UInt8.self)
                }
            }
        }
    }

    static func decodeQ2_K(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 84, yb = y + b * qk
            let d = loadHalf(s + 80), dmin = loadHalf(s + 82)
            for c in 0..<2 {
                for shift in 0..<4 {
                    for half in 0..<2 {
                        let sc = s.load(fromByteOffset: 8 * c + 2 * shift + half, as: UInt8.self)
                        let dl = d * Float(sc & 0xF), ml = dmin * Float(sc >> 4)
                        for l in 0..<16 {
                            let q = s.load(fromByteOffset: 16 + 32 * c + 16 * half + l, as: UInt8.self)
                            yb[128 * c + 32 * shift + 16 * half + l] = dl * Float((q >> (2 * shift)) & 3) - ml
                        }
                    }
                }
            }
        }
    }

    // MARK: Q3_K: hmask:u8[32], qs:u8[64], scales:u8[12] (sixteen 6-bit), d:f16 — 110 bytes

    /// Sub-block j's 6-bit scale (offset by 32) from Q3_K's 12-byte packing.
    @inline(__always) static func q3Scale(_ j: Int, _ s: UnsafeRawPointer) -> Int {
        func b(_ k: Int) -> UInt8 { s.load(fromByteOffset: k, as: UInt8.self) }
        let low = j < 8 ? b(j) & 0xF : b(j - 8) >> 4
        return Int(low | (((b(8 + j % 4) >> (2 * (j / 4))) & 3) << 4)) - 32
    }

    static func encodeQ3_K(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var L = [Int8](repeating: 0, count: qk)
        var scales = [Float](repeating: 0, count: 16)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 110
            var maxScale: Float = 0, amax: Float = 0
            for g in 0..<2 {   // sixteen sub-blocks: two groups of eight lanes
                let s = L.withUnsafeMutableBufferPointer { symmetricRefine8(xb + 128 * g, 16, nmax: 4, levels: $0.baseAddress! + 128 * g) }
                for k in 0..<8 { scales[8 * g + k] = s[k] }
            }
            for j in 0..<16 where abs(scales[j]) > amax { amax = abs(scales[j]); maxScale = scales[j] }
            let sc = o + 96
            for k in 0..<12 { sc.storeBytes(of: 0, toByteOffset: k, as: UInt8.self) }
            func or(_ k: Int, _ v: UInt8) { sc.storeBytes(of: sc.load(fromByteOffset: k, as: UInt8.self) | v, toByteOffset: k, as: UInt8.self) }
            if maxScale != 0 {
                let iscale: Float = -32 / maxScale
                for j in 0..<16 {
                    let l = UInt8(max(-32, min(31, Int(Int8(truncatingIfNeeded: nearestInt(iscale * scales[j]))))) + 32)
                    if j < 8 { or(j, l & 0xF) } else { or(j - 8, (l & 0xF) << 4) }
                    or(8 + j % 4, (l >> 4) << (2 * (j / 4)))
                }
                storeHalf(1 / iscale, o + 108)
            } else {
                storeHalf(0, o + 108)
            }
            finishQ3_K(xb, &L, o)
        }
    }

    /// From the stored d and 6-bit scales: the levels re-derived, the high bits into hmask, the low
    /// two bits packed. Eight values at a time: the quotient is IEEE-exact in a lane as in a scalar,
    /// and clamping it to [-8, 8] before ggml's rounding trick leaves the clamped level unchanged.
    /// A NaN quotient (an f16 scale that overflowed to infinity, times a zero 6-bit scale) is level
    /// 0, as the scalar nearestInt gives it.
    static func finishQ3_K(_ xb: UnsafePointer<Float>, _ L: inout [Int8], _ o: UnsafeMutableRawPointer) {
        let d = loadHalf(o + 108), sc = o + 96
        let raw = UnsafeRawPointer(xb)
        L.withUnsafeMutableBufferPointer { lp in
            let l = lp.baseAddress!
            for j in 0..<16 {
                let dj = d * Float(q3Scale(j, sc))
                if dj == 0 { continue }
                for h in 0..<2 {
                    var v = raw.loadUnaligned(fromByteOffset: 4 * (16 * j + 8 * h), as: F8.self) / F8(repeating: dj)
                    v.replace(with: 0, where: v .!= v)
                    v.replace(with: -8, where: v .< -8)
                    v.replace(with: 8, where: v .> 8)
                    let q = clamp8(nearestInt8(v), I8(repeating: -4), I8(repeating: 3)) &+ I8(repeating: 4)
                    for k in 0..<8 { l[16 * j + 8 * h + k] = Int8(truncatingIfNeeded: q[k]) }
                }
            }
            // The high bit of level j goes to bit j/32 of hmask[j % 32]; the low two bits to qs.
            let q = o.assumingMemoryBound(to: UInt8.self)
            for k in 0..<32 {
                var mask: UInt8 = 0
                for c in 0..<8 where l[32 * c + k] > 3 { mask |= 1 << c; l[32 * c + k] -= 4 }
                q[k] = mask
            }
            for c in 0..<2 {
                for i in 0..<32 {
                    let e = 128 * c + i
                    q[32 + 32 * c + i] = UInt8(l[e]) | UInt8(l[e + 32]) << 2 | UInt8(l[e + 64]) << 4 | UInt8(l[e + 96]) << 6
                }
            }
        }
    }

    static func decodeQ3_K(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 110, yb = y + b * qk
            let d = loadHalf(s + 108)
            for c in 0..<2 {
                for shift in 0..<4 {
                    for half in 0..<2 {
                        let dl = d * Float(q3Scale(8 * c + 2 * shift + half, s + 96))
                        let bit = UInt8(1 << (4 * c + shift))
                        for l in 0..<16 {
                            let idx = 16 * half + l
                            let q = Int((s.load(fromByteOffset: 32 + 32 * c + idx, as: UInt8.self) >> (2 * shift)) & 3)
                            let high = s.load(fromByteOffset: idx, as: UInt8.self) & bit != 0 ? 0 : 4
                            yb[128 * c + 32 * shift + idx] = dl * Float(q - high)
                        }
                    }
                }
            }
        }
    }

    // MARK: Q5_K: d:f16, dmin:f16, scales:u8[12] (as Q4_K), qh:u8[32], qs:u8[128] — 176 bytes

    static func encodeQ5_K(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var L = [UInt8](repeating: 0, count: qk)
        var scales = [Float](repeating: 0, count: 8), mins = [Float](repeating: 0, count: 8)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 176
            let (maxScale, maxMin) = subBlockSearch(xb, nmax: 31, rmin: -0.5, rdelta: 0.1, nstep: 15, levels: &L, scales: &scales, mins: &mins)
            packScalesAndMins(scales, mins, maxScale: maxScale, maxMin: maxMin, into: o)
            finishQ5_K(xb, &L, o)
        }
    }

    /// From the stored d, dmin and 6-bit scales/mins: the levels re-derived, the fifth bits into
    /// qh, the low four packed.
    static func finishQ5_K(_ xb: UnsafePointer<Float>, _ L: inout [UInt8], _ o: UnsafeMutableRawPointer) {
        rederiveLevels(xb, &L, o, nmax: 31)
        for k in 0..<32 { o.storeBytes(of: 0, toByteOffset: 16 + k, as: UInt8.self) }
        for c in 0..<4 {
            for l in 0..<32 {
                var l1 = L[64 * c + l], l2 = L[64 * c + l + 32]
                var h = o.load(fromByteOffset: 16 + l, as: UInt8.self)
                if l1 > 15 { l1 -= 16; h |= UInt8(1 << (2 * c)) }
                if l2 > 15 { l2 -= 16; h |= UInt8(2 << (2 * c)) }
                o.storeBytes(of: h, toByteOffset: 16 + l, as: UInt8.self)
                o.storeBytes(of: l1 | (l2 << 4), toByteOffset: 48 + 32 * c + l, as: UInt8.self)
            }
        }
    }

    static func decodeQ5_K(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 176, yb = y + b * qk
            let d = loadHalf(s), dmin = loadHalf(s + 2)
            for c in 0..<4 {
                let (s1, m1) = scaleMin(2 * c, s + 4), (s2, m2) = scaleMin(2 * c + 1, s + 4)
                let d1 = d * Float(s1), mm1 = dmin * Float(m1), d2 = d * Float(s2), mm2 = dmin * Float(m2)
                for l in 0..<32 {
                    let q = s.load(fromByteOffset: 48 + 32 * c + l, as: UInt8.self), h = s.load(fromByteOffset: 16 + l, as: UInt8.self)
                    yb[64 * c + l] = d1 * Float(Int(q & 0xF) + (h & UInt8(1 << (2 * c)) != 0 ? 16 : 0)) - mm1
                    yb[64 * c + 32 + l] = d2 * Float(Int(q >> 4) + (h & UInt8(2 << (2 * c)) != 0 ? 16 : 0)) - mm2
                }
            }
        }
    }

    /// Q4_K's and Q5_K's 12-byte packing of eight 6-bit scales and mins against d = max/63 and
    /// dmin = maxMin/63 (stored at `o` and `o + 2`, the packing at `o + 4`).
    static func packScalesAndMins(_ scales: [Float], _ mins: [Float], maxScale: Float, maxMin: Float, into o: UnsafeMutableRawPointer) {
        let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
        let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
        // C stores nearest_int into a uint8_t (mod 256) before MIN(63, .)
        packSixBit(scales.map { min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * $0))) },
                   mins.map { min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * $0))) }, into: o + 4)
        storeHalf(maxScale / 63, o)
        storeHalf(maxMin / 63, o + 2)
    }

    /// Eight 6-bit scales and mins in 12 bytes (`get_scale_min_k4` reads them back).
    static func packSixBit(_ ls: [UInt8], _ lm: [UInt8], into sc: UnsafeMutableRawPointer) {
        for k in 0..<12 { sc.storeBytes(of: 0, toByteOffset: k, as: UInt8.self) }
        func or(_ k: Int, _ v: UInt8) { sc.storeBytes(of: sc.load(fromByteOffset: k, as: UInt8.self) | v, toByteOffset: k, as: UInt8.self) }
        for j in 0..<8 {
            if j < 4 {
                or(j, ls[j]); or(j + 4, lm[j])
            } else {
                or(j + 4, (ls[j] & 0xF) | ((lm[j] & 0xF) << 4))
                or(j - 4, (ls[j] >> 4) << 6)
                or(j, (lm[j] >> 4) << 6)
            }
        }
    }

    /// Q4_K's and Q5_K's search: per sub-block of 32 the weights av + |x| (av the sub-block's RMS)
    /// and `make_qkx2_quants`; returns the largest scale and min (ggml's strict `>` from +0: a
    /// sub-block whose min is -0.0 must not turn dmin into -0.0, as Swift's max(0, -0.0) would).
    static func subBlockSearch(_ xb: UnsafePointer<Float>, nmax: Int, rmin: Float, rdelta: Float, nstep: Int, levels L: inout [UInt8],
                               scales: inout [Float], mins: inout [Float]) -> (Float, Float) {
        var w = [Float](repeating: 0, count: 256)
        for j in 0..<8 {
            let xs = xb + 32 * j
            var sumX2: Float = 0
            for l in 0..<32 { sumX2 += xs[l] * xs[l] }
            let av = (sumX2 / 32).squareRoot()
            for l in 0..<32 { w[32 * j + l] = av + abs(xs[l]) }
        }
        let r = w.withUnsafeBufferPointer { wp in
            L.withUnsafeMutableBufferPointer { affineSearch8(xb, 32, nmax: nmax, weights: wp.baseAddress!, levels: $0.baseAddress!,
                                                             rmin: rmin, rdelta: rdelta, nstep: nstep, absoluteError: false) }
        }
        var maxScale: Float = 0, maxMin: Float = 0
        for j in 0..<8 {
            scales[j] = r.scale[j]; mins[j] = r.negMin[j]
            if scales[j] > maxScale { maxScale = scales[j] }
            if mins[j] > maxMin { maxMin = mins[j] }
        }
        return (maxScale, maxMin)
    }
}
