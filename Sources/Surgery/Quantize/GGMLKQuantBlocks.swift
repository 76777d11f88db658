/// llama.cpp's K-quant super-blocks (256 elements) Q4_K and Q6_K, ported from ggml's reference
/// encoders without an importance matrix (`quantize_row_q4_K_ref`, `quantize_row_q6_K_ref`):
/// per sub-block a small search for the scale (and min) that minimises a weighted squared error,
/// then the sub-scales themselves quantised to 6 / 8 bits against one f16 super-scale.
enum GGMLKQuantBlocks {
    static let qk = 256
    static let groupMaxEps: Float = 1e-15

    // MARK: Q4_K: d:f16, dmin:f16, scales:u8[12] (6-bit scale + 6-bit min per 32), qs:u8[128] — 144 bytes

    /// `make_qkx2_quants`: affine levels 0...nmax for one sub-block; returns (scale, -min) with min <= 0.
    /// The error is weighted squared, or weighted absolute with `absoluteError` (ggml's use_mad, Q2_K).
    static func affineSearch(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, weights: [Float],
                             levels: inout [UInt8], offset: Int, rmin: Float, rdelta: Float, nstep: Int,
                             absoluteError: Bool = false) -> (Float, Float) {
        weights.withUnsafeBufferPointer { w in
            levels.withUnsafeMutableBufferPointer { L in
                affineSearch(x, n, nmax: nmax, weights: w.baseAddress!, levels: L.baseAddress! + offset,
                             rmin: rmin, rdelta: rdelta, nstep: nstep, absoluteError: absoluteError)
            }
        }
    }

    /// The same on pointers (the hot loop of the K-quant encoders: no array checks, no allocation).
    static func affineSearch(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, weights w: UnsafePointer<Float>,
                             levels L: UnsafeMutablePointer<UInt8>, rmin: Float, rdelta: Float, nstep: Int,
                             absoluteError: Bool) -> (Float, Float) {
        @inline(__always) func cost(_ d: Float) -> Float { absoluteError ? abs(d) : d * d }
        var lo = x[0], hi = x[0]
        var sumW = w[0], sumX = w[0] * x[0]
        for i in 1..<n {
            if x[i] < lo { lo = x[i] }
            if x[i] > hi { hi = x[i] }
            sumW += w[i]
            sumX += w[i] * x[i]
        }
        if lo > 0 { lo = 0 }
        if hi == lo {
            for i in 0..<n { L[i] = 0 }
            return (0, -lo)
        }
        let fmax = Float(nmax)
        var iscale = fmax / (hi - lo)
        var scale = 1 / iscale
        var bestError: Float = 0
        for i in 0..<n {
            let l = UInt8(truncatingIfNeeded: max(0, min(nmax, nearestInt(iscale * (x[i] - lo)))))
            L[i] = l
            let diff = scale * Float(l) + lo - x[i]
            bestError += w[i] * cost(diff)
        }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: n) { auxBuffer in
            let aux = auxBuffer.baseAddress!
            for step in 0...nstep {
                iscale = (rmin + rdelta * Float(step) + fmax) / (hi - lo)
                var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
                for i in 0..<n {
                    let l = max(0, min(nmax, nearestInt(iscale * (x[i] - lo))))
                    aux[i] = UInt8(truncatingIfNeeded: l)
                    let fl = Float(l)
                    sumL += w[i] * fl
                    sumL2 += w[i] * fl * fl
                    sumXL += w[i] * fl * x[i]
                }
                let det = sumW * sumL2 - sumL * sumL
                guard det > 0 else { continue }
                var thisScale = (sumW * sumXL - sumX * sumL) / det
                var thisMin = (sumL2 * sumX - sumL * sumXL) / det
                if thisMin > 0 {
                    thisMin = 0
                    thisScale = sumXL / sumL2
                }
                var err: Float = 0
                for i in 0..<n {
                    let diff = thisScale * Float(aux[i]) + thisMin - x[i]
                    err += w[i] * cost(diff)
                }
                if err < bestError {
                    L.update(from: aux, count: n)
                    bestError = err
                    scale = thisScale
                    lo = thisMin
                }
            }
            return (scale, -lo)
        }
    }

    /// The 12-byte packing of eight 6-bit (scale, min) pairs (`get_scale_min_k4` reads it back).
    @inline(__always) static func scaleMin(_ j: Int, _ s: UnsafeRawPointer) -> (UInt8, UInt8) {
        func b(_ k: Int) -> UInt8 { s.load(fromByteOffset: k, as: UInt8.self) }
        if j < 4 { return (b(j) & 63, b(j + 4) & 63) }
        return ((b(j + 4) & 0xF) | ((b(j - 4) >> 6) << 4), (b(j + 4) >> 4) | ((b(j) >> 6) << 4))
    }

    static func encodeQ4_K(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var L = [UInt8](repeating: 0, count: qk)
        var scales = [Float](repeating: 0, count: 8), mins = [Float](repeating: 0, count: 8)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 144
            let (maxScale, maxMin) = subBlockSearch(xb, nmax: 15, rmin: -1, rdelta: 0.1, nstep: 20, levels: &L, scales: &scales, mins: &mins)
            packScalesAndMins(scales, mins, maxScale: maxScale, maxMin: maxMin, into: o)
            finishQ4_K(xb, &L, o)
        }
    }

    /// From the stored d, dmin and 6-bit scales/mins: the levels re-derived, then packed.
    static func finishQ4_K(_ xb: UnsafePointer<Float>, _ L: inout [UInt8], _ o: UnsafeMutableRawPointer) {
        rederiveLevels(xb, &L, o, nmax: 15)
        let q = o + 16
        for c in 0..<4 {
            for l in 0..<32 {
                q.storeBytes(of: L[64 * c + l] | (L[64 * c + l + 32] << 4), toByteOffset: 32 * c + l, as: UInt8.self)
            }
        }
    }

    /// Q4_K's and Q5_K's levels 0...nmax from the stored d, dmin and 6-bit scales/mins (a sub-block
    /// whose scale is 0 keeps its search levels, as ggml does).
    static func rederiveLevels(_ xb: UnsafePointer<Float>, _ L: inout [UInt8], _ o: UnsafeMutableRawPointer, nmax: Int) {
        let d = loadHalf(o), dmin = loadHalf(o + 2)
        for j in 0..<8 {
            let (s, m) = scaleMin(j, o + 4)
            let dj = d * Float(s)
            if dj == 0 { continue }
            let dm = dmin * Float(m)
            for i in 0..<32 { L[32 * j + i] = UInt8(clamping: max(0, min(nmax, nearestInt((xb[32 * j + i] + dm) / dj)))) }
        }
    }

    static func decodeQ4_K(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 144, yb = y + b * qk
            let d = loadHalf(s), dmin = loadHalf(s + 2)
            for c in 0..<4 {
                let (s1, m1) = scaleMin(2 * c, s + 4), (s2, m2) = scaleMin(2 * c + 1, s + 4)
                let d1 = d * Float(s1), mm1 = dmin * Float(m1)
                let d2 = d * Float(s2), mm2 = dmin * Float(m2)
                for l in 0..<32 {
                    let v = s.load(fromByteOffset: 16 + 32 * c + l, as: UInt8.self)
                    yb[64 * c + l] = d1 * Float(v & 0xF) - mm1
                    yb[64 * c + 32 + l] = d2 * Float(v >> 4) - mm2
                }
            }
        }
    }

    // MARK: Q6_K: ql:u8[128], qh:u8[64], scales:i8[16], d:f16 — 210 bytes

    /// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)`: symmetric levels -nmax...nmax-1 with
    /// weights qw (an importance matrix's) or x², the best of 19 candidate scales; L gets level + nmax.
    static func symmetricSearch(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, levels L: inout [Int8], offset: Int,
                                weights qw: UnsafePointer<Float>? = nil) -> Float {
        var mx: Float = 0, amax: Float = 0
        for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); mx = x[i] }
        if amax < groupMaxEps {
            for i in 0..<n { L[offset + i] = 0 }
            return 0
        }
        let fmax = Float(nmax)
        var iscale = -fmax / mx
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
            L[offset + i] = Int8(l + nmax)
            let w = qw?[i] ?? x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for step in -9...9 where step != 0 {
            iscale = -(fmax + 0.1 * Float(step)) / mx
            sumLX = 0; sumL2 = 0
            for i in 0..<n {
                let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
                let w = qw?[i] ?? x[i] * x[i], fl = Float(l)
                sumLX += w * x[i] * fl
                sumL2 += w * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n { L[offset + i] = Int8(nmax + max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))) }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }

    static func encodeQ6_K(_ x: UnsafePointer<Float>, _ n: Int, _ out: UnsafeMutableRawPointer) {
        var L = [Int8](repeating: 0, count: qk)
        var scales = [Float](repeating: 0, count: 16)
        for b in 0..<(n / qk) {
            let xb = x + b * qk
            searchQ6_K(xb, weights: nil, levels: &L, scales: &scales)
            finishQ6_K(xb, scales, &L, out + b * 210)
        }
    }

    /// The sixteen sub-block scales of a Q6_K super-block, eight lanes at a time.
    static func searchQ6_K(_ xb: UnsafePointer<Float>, weights qw: UnsafePointer<Float>?, levels L: inout [Int8], scales: inout [Float]) {
        for g in 0..<2 {
            let s = L.withUnsafeMutableBufferPointer {
                symmetricSearch8(xb + 128 * g, 16, nmax: 32, levels: $0.baseAddress! + 128 * g, weights: qw.map { $0 + 128 * g })
            }
            for k in 0..<8 { scales[8 * g + k] = s[k] }
        }
    }

    /// From the sixteen sub-block scales: the 8-bit scales against one f16 d, the levels
    /// re-derived, then packed.
    static func finishQ6_K(_ xb: UnsafePointer<Float>, _ scales: [Float], _ L: inout [Int8], _ o: UnsafeMutableRawPointer) {
        var maxScale: Float = 0, maxAbsScale: Float = 0
        for j in 0..<16 where abs(scales[j]) > maxAbsScale { maxAbsScale = abs(scales[j]); maxScale = scales[j] }
        if maxAbsScale < groupMaxEps {
            for k in 0..<210 { o.storeBytes(of: 0, toByteOffset: k, as: UInt8.self) }
            return
        }
        let iscale = -128 / maxScale
        storeHalf(1 / iscale, o + 208)
        for j in 0..<16 {
            o.storeBytes(of: Int8(clamping: min(127, nearestInt(iscale * scales[j]))), toByteOffset: 192 + j, as: Int8.self)
        }
        let d = loadHalf(o + 208)
        for j in 0..<16 {
            let dj = d * Float(o.load(fromByteOffset: 192 + j, as: Int8.self))
            if dj == 0 { continue }
            for i in 0..<16 { L[16 * j + i] = Int8(max(-32, min(31, nearestInt(xb[16 * j + i] / dj))) + 32) }
        }
        for c in 0..<2 {
            for l in 0..<32 {
                let e = 128 * c + l
                let q1 = UInt8(L[e]), q2 = UInt8(L[e + 32]), q3 = UInt8(L[e + 64]), q4 = UInt8(L[e + 96])
                o.storeBytes(of: (q1 & 0xF) | ((q3 & 0xF) << 4), toByteOffset: 64 * c + l, as: UInt8.self)
                o.storeBytes(of: (q2 & 0xF) | ((q4 & 0xF) << 4), toByteOffset: 64 * c + l + 32, as: UInt8.self)
                o.storeBytes(of: (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6),
                             toByteOffset: 128 + 32 * c + l, as: UInt8.self)
            }
        }
    }

    static func decodeQ6_K(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 210, yb = y + b * qk
            let d = loadHalf(s + 208)
            for c in 0..<2 {
                for l in 0..<32 {
                    let half = l / 16
                    let ql0 = s.load(fromByteOffset: 64 * c + l, as: UInt8.self)
                    let ql1 = s.load(fromByteOffset: 64 * c + l + 32, as: UInt8.self)
                    let qh = s.load(fromByteOffset: 128 + 32 * c + l, as: UInt8.self)
                    let q0 = Int(ql0 & 0xF) | Int(qh & 3) << 4, q1 = Int(ql1 & 0xF) | Int((qh >> 2) & 3) << 4
                    let q2 = Int(ql0 >> 4) | Int((qh >> 4) & 3) << 4, q3 = Int(ql1 >> 4) | Int((qh >> 6) & 3) << 4
                    for (k, q) in [q0, q1, q2, q3].enumerated() {
                        let sc = Float(s.load(fromByteOffset: 192 + 8 * c + half + 2 * k, as: Int8.self))
                        yb[128 * c + 32 * k + l] = d * sc * Float(q - 32)
                    }
                }
            }
        }
    }
}
