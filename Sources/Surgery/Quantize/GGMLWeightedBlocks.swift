/// The block encoders with an importance matrix: ggml's `quantize_row_*_impl` (what
/// `ggml_quantize_chunk` and llama-quantize run when given `quant_weights`), ported byte for byte.
/// Each takes one row of `n` values and the row's `n` importance weights (one per input column);
/// the searches weight each value by qw·sqrt(σ² + x²), σ² from the super-block or the row.
/// Q8_0 and the ternary types ignore importance weights, as ggml does.
enum GGMLWeightedBlocks {
    typealias K = GGMLKQuantBlocks
    static let qk = 256

    /// `make_qp_quants`: non-negative levels 0...nmax for the sub-block scales (or mins) of a
    /// super-block, weighted by the sub-blocks' total weights.
    static func positiveSearch(_ x: [Float], nmax: Int, levels L: inout [UInt8], weights qw: [Float]) -> Float {
        let n = x.count
        var mx: Float = 0
        for v in x where v > mx { mx = v }
        if mx < K.groupMaxEps {
            for i in 0..<n { L[i] = 0 }
            return 0
        }
        let fmax = Float(nmax)
        var iscale = fmax / mx
        for i in 0..<n { L[i] = UInt8(truncatingIfNeeded: nearestInt(iscale * x[i])) }
        let scale = 1 / iscale
        var bestMSE: Float = 0
        for i in 0..<n {
            let diff = x[i] - scale * Float(L[i])
            bestMSE += qw[i] * diff * diff
        }
        for step in -4...4 where step != 0 {
            let iscaleStep = (0.1 * Float(step) + fmax) / mx
            let scaleStep = 1 / iscaleStep
            var mse: Float = 0
            for i in 0..<n {
                let l = min(nmax, nearestInt(iscaleStep * x[i]))
                let diff = x[i] - scaleStep * Float(l)
                mse += qw[i] * diff * diff
            }
            if mse < bestMSE { bestMSE = mse; iscale = iscaleStep }
        }
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = min(nmax, nearestInt(iscale * x[i]))
            L[i] = UInt8(truncatingIfNeeded: l)
            sumLX += qw[i] * x[i] * Float(l)
            sumL2 += qw[i] * Float(l) * Float(l)
        }
        for _ in 0..<5 {
            var changed = 0
            for i in 0..<n {
                let w = qw[i], li = Float(L[i])
                var slx = sumLX - w * x[i] * li
                var sl2 = sumL2 - w * li * li
                guard slx > 0 && sl2 > 0 else { continue }
                let newL = min(nmax, nearestInt(x[i] * sl2 / slx))
                if newL != Int(L[i]) {
                    slx += w * x[i] * Float(newL)
                    sl2 += w * Float(newL) * Float(newL)
                    if slx * slx * sumL2 > sumLX * sumLX * sl2 {
                        L[i] = UInt8(truncatingIfNeeded: newL); sumLX = slx; sumL2 = sl2
                        changed += 1
                    }
                }
            }
            if changed == 0 { break }
        }
        return sumL2 > 0 ? sumLX / sumL2 : 0
    }

    /// qw·sqrt(σ² + x²) for `count` values.
    @inline(__always) static func weights(_ x: UnsafePointer<Float>, _ qw: UnsafePointer<Float>, _ count: Int, sigma2: Float, into w: inout [Float]) {
        for l in 0..<count { w[l] = qw[l] * (sigma2 + x[l] * x[l]).squareRoot() }
    }

    static func sumSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var s: Float = 0
        for j in 0..<n { s += x[j] * x[j] }
        return s
    }

    /// `make_qkx3_quants(.., rmin -0.9, rdelta 0.05, nstep 36)` for `groups` x 8 sub-blocks of `n`,
    /// eight lanes at a time (`affineSearch8`).
    static func searchLanes(_ xb: UnsafePointer<Float>, _ n: Int, groups: Int, nmax: Int, weights w: [Float], levels L: inout [UInt8],
                            scales: inout [Float], mins: inout [Float]) {
        for g in 0..<groups {
            let r = w.withUnsafeBufferPointer { wp in
                L.withUnsafeMutableBufferPointer {
                    K.affineSearch8(xb + 8 * n * g, n, nmax: nmax, weights: wp.baseAddress! + 8 * n * g, levels: $0.baseAddress! + 8 * n * g,
                                    rmin: -0.9, rdelta: 0.05, nstep: 36, absoluteError: false)
                }
            }
            for k in 0..<8 { scales[8 * g + k] = r.scale[k]; mins[8 * g + k] = r.negMin[k] }
        }
    }

    // MARK: K types

    static func encodeQ2_K(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var L = [UInt8](repeating: 0, count: qk), Ls = [UInt8](repeating: 0, count: 16), Lm = Ls
        var w = [Float](repeating: 0, count: qk), sw = [Float](repeating: 0, count: 16), scales = sw, mins = sw
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 84, qb = qw + b * qk
            let sigma2 = sumSquares(xb, qk) / Float(qk)
            weights(xb, qb, qk, sigma2: sigma2, into: &w)
            for j in 0..<16 {
                sw[j] = 0
                for l in 0..<16 { sw[j] += w[16 * j + l] }
            }
            searchLanes(xb, 16, groups: 2, nmax: 3, weights: w, levels: &L, scales: &scales, mins: &mins)
            storeHalf(positiveSearch(scales, nmax: 15, levels: &Ls, weights: sw), o + 80)
            storeHalf(positiveSearch(mins, nmax: 15, levels: &Lm, weights: sw), o + 82)
            let dm = loadHalf(o + 80), mm = loadHalf(o + 82)
            for j in 0..<16 { o.storeBytes(of: Ls[j] | (Lm[j] << 4), toByteOffset: j, as: UInt8.self) }
            for j in 0..<16 {
                let sc = o.load(fromByteOffset: j, as: UInt8.self)
                let d = dm * Float(sc & 0xF)
                if d == 0 { continue }
                let m = mm * Float(sc >> 4)
                for i in 0..<16 { L[16 * j + i] = UInt8(max(0, min(3, nearestInt((xb[16 * j + i] + m) / d)))) }
            }
            for c in 0..<2 {
                for l in 0..<32 {
                    let e = 128 * c + l
                    o.storeBytes(of: L[e] | (L[e + 32] << 2) | (L[e + 64] << 4) | (L[e + 96] << 6), toByteOffset: 16 + 32 * c + l, as: UInt8.self)
                }
            }
        }
    }

    static func encodeQ3_K(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var L = [Int8](repeating: 0, count: qk), Ls = [Int8](repeating: 0, count: 16)
        var w = [Float](repeating: 0, count: 16), sw = w, scales = w
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 110, qb = qw + b * qk
            let sigma2 = 2 * sumSquares(xb, qk) / Float(qk)
            for j in 0..<16 {
                weights(xb + 16 * j, qb + 16 * j, 16, sigma2: sigma2, into: &w)
                var sumW: Float = 0
                for l in 0..<16 { sumW += w[l] }
                sw[j] = sumW
                scales[j] = w.withUnsafeBufferPointer { K.symmetricSearch(xb + 16 * j, 16, nmax: 4, levels: &L, offset: 16 * j, weights: $0.baseAddress!) }
            }
            let sc = o + 96
            for k in 0..<12 { sc.storeBytes(of: 0, toByteOffset: k, as: UInt8.self) }
            func or(_ k: Int, _ v: UInt8) { sc.storeBytes(of: sc.load(fromByteOffset: k, as: UInt8.self) | v, toByteOffset: k, as: UInt8.self) }
            let dBlock = scales.withUnsafeBufferPointer { s in sw.withUnsafeBufferPointer { K.symmetricSearch(s.baseAddress!, 16, nmax: 32, levels: &Ls, offset: 0, weights: $0.baseAddress!) } }
            for j in 0..<16 {
                let l = UInt8(truncatingIfNeeded: Ls[j])
                if j < 8 { or(j, l & 0xF) } else { or(j - 8, (l & 0xF) << 4) }
                or(8 + j % 4, (l >> 4) << (2 * (j / 4)))
            }
            storeHalf(dBlock, o + 108)
            K.finishQ3_K(xb, &L, o)
        }
    }

    /// K-quants with 8 sub-blocks of 32, 6-bit scales and mins (Q4_K: nmax 15, Q5_K: nmax 31).
    static func scalesAndMins(_ xb: UnsafePointer<Float>, _ qb: UnsafePointer<Float>, nmax: Int, levels L: inout [UInt8], into o: UnsafeMutableRawPointer) {
        var w = [Float](repeating: 0, count: qk), sw = [Float](repeating: 0, count: 8), scales = sw, mins = sw
        var Ls = [UInt8](repeating: 0, count: 8), Lm = Ls
        let sigma2 = 2 * sumSquares(xb, qk) / Float(qk)
        weights(xb, qb, qk, sigma2: sigma2, into: &w)
        for j in 0..<8 {
            var sumW: Float = 0
            for l in 0..<32 { sumW += w[32 * j + l] }
            sw[j] = sumW
        }
        searchLanes(xb, 32, groups: 1, nmax: nmax, weights: w, levels: &L, scales: &scales, mins: &mins)
        let dBlock = positiveSearch(scales, nmax: 63, levels: &Ls, weights: sw)
        let mBlock = positiveSearch(mins, nmax: 63, levels: &Lm, weights: sw)
        K.packSixBit(Ls.map { min(63, $0) }, Lm.map { min(63, $0) }, into: o + 4)
        storeHalf(dBlock, o)
        storeHalf(mBlock, o + 2)
    }

    static func encodeQ4_K(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var L = [UInt8](repeating: 0, count: qk)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 144
            scalesAndMins(xb, qw + b * qk, nmax: 15, levels: &L, into: o)
            K.finishQ4_K(xb, &L, o)
        }
    }

    static func encodeQ5_K(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var L = [UInt8](repeating: 0, count: qk)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 176
            scalesAndMins(xb, qw + b * qk, nmax: 31, levels: &L, into: o)
            K.finishQ5_K(xb, &L, o)
        }
    }

    static func encodeQ6_K(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var L = [Int8](repeating: 0, count: qk)
        var scales = [Float](repeating: 0, count: 16)
        for b in 0..<(n / qk) {
            let xb = x + b * qk, o = out + b * 210
            K.searchQ6_K(xb, weights: qw + b * qk, levels: &L, scales: &scales)
            K.finishQ6_K(xb, scales, &L, o)
        }
    }

    // MARK: 32-element types (σ² over the whole row)

    static func encodeQ4_0(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        symmetric32(x, n, qw, nmax: 8, blockBytes: 18, out) { L, o in GGMLLegacyBlocks.packNibbles(L, o + 2) }
    }

    static func encodeQ5_0(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        symmetric32(x, n, qw, nmax: 16, blockBytes: 22, out) { L, o in GGMLLegacyBlocks.storeHighBits(L, o + 2); GGMLLegacyBlocks.packNibbles(L, o + 6) }
    }

    static func encodeQ4_1(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        affine32(x, n, qw, nmax: 15, blockBytes: 20, out) { L, o in GGMLLegacyBlocks.packNibbles(L, o + 4) }
    }

    static func encodeQ5_1(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        affine32(x, n, qw, nmax: 31, blockBytes: 24, out) { L, o in GGMLLegacyBlocks.storeHighBits(L, o + 4); GGMLLegacyBlocks.packNibbles(L, o + 8) }
    }

    /// Q4_0/Q5_0 with weights: `make_qx_quants(32, nmax, x, L, 1, w)`, d stored, levels packed.
    private static func symmetric32(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, nmax: Int, blockBytes: Int,
                                    _ out: UnsafeMutableRawPointer, pack: ([UInt8], UnsafeMutableRawPointer) -> Void) {
        let sigma2 = sumSquares(x, n) / Float(n)
        var w = [Float](repeating: 0, count: 32), L = [Int8](repeating: 0, count: 32)
        for b in 0..<(n / 32) {
            let o = out + b * blockBytes
            weights(x + 32 * b, qw + 32 * b, 32, sigma2: sigma2, into: &w)
            let d = w.withUnsafeBufferPointer { K.symmetricSearch(x + 32 * b, 32, nmax: nmax, levels: &L, offset: 0, weights: $0.baseAddress!) }
            storeHalf(d, o)
            pack(L.map { UInt8(bitPattern: $0) }, o)
        }
    }

    /// Q4_1/Q5_1 with weights: `make_qkx3_quants(32, nmax, x, w, ...)`, d and m = -min stored.
    private static func affine32(_ x: UnsafePointer<Float>, _ n: Int, _ qw: UnsafePointer<Float>, nmax: Int, blockBytes: Int,
                                 _ out: UnsafeMutableRawPointer, pack: ([UInt8], UnsafeMutableRawPointer) -> Void) {
        let sigma2 = sumSquares(x, n) / Float(n)
        var w = [Float](repeating: 0, count: 32), L = [UInt8](repeating: 0, count: 32)
        for b in 0..<(n / 32) {
            let o = out + b * blockBytes
            weights(x + 32 * b, qw + 32 * b, 32, sigma2: sigma2, into: &w)
            let (d, negMin) = K.affineSearch(x + 32 * b, 32, nmax: nmax, weights: w, levels: &L, offset: 0, rmin: -0.9, rdelta: 0.05, nstep: 36)
            storeHalf(d, o)
            storeHalf(-negMin, o + 2)
            pack(L, o)
        }
    }
}
