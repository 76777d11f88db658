/// `make_qkx2_quants` / `make_qkx3_quants` for eight sub-blocks at once, one per SIMD lane. The
/// search is a chain of dependent f32 sums inside a sub-block (reordering them would change the
/// bytes), but the eight sub-blocks of a super-block are independent: each lane runs exactly the
/// scalar search's operations in the scalar order, so the results are bit for bit the scalar
/// `GGMLKQuantBlocks.affineSearch`'s, eight at the cost of about one.
extension GGMLKQuantBlocks {
    typealias F8 = SIMD8<Float>
    typealias I8 = SIMD8<Int32>

    /// ggml's nearest_int on lanes whose values lie within |v| <= 4194303.
    @inline(__always) static func nearestInt8(_ v: F8) -> I8 {
        let shifted = v + F8(repeating: 12582912)
        return I8(truncatingIfNeeded: unsafeBitCast(shifted, to: SIMD8<UInt32>.self) & SIMD8<UInt32>(repeating: 0x007F_FFFF))
            &- I8(repeating: 0x0040_0000)
    }

    /// `v.clamped(lowerBound:upperBound:)` by lane selects: the standard library's SIMD clamp goes
    /// through generic pointwiseMin/Max calls that are not inlined here, a fifth of a K-quant search.
    @inline(__always) static func clamp8(_ v: I8, _ lo: I8, _ hi: I8) -> I8 {
        v.replacing(with: lo, where: v .< lo).replacing(with: hi, where: v .> hi)
    }

    /// Element i of eight sub-blocks of `n` values stored one after another, as lanes.
    @inline(__always) static func gather8(_ p: UnsafePointer<Float>, _ n: Int, _ i: Int) -> F8 {
        F8(p[i], p[n + i], p[2 * n + i], p[3 * n + i], p[4 * n + i], p[5 * n + i], p[6 * n + i], p[7 * n + i])
    }

    /// Per lane the value of largest magnitude (the first one in index order, ggml's strict `>`)
    /// and that magnitude.
    @inline(__always) static func signedMax8(_ xt: UnsafePointer<F8>, _ n: Int) -> (value: F8, magnitude: F8) {
        let zero = F8(repeating: 0)
        var mx = zero, amax = zero
        for i in 0..<n {
            let ax = xt[i].replacing(with: -xt[i], where: xt[i] .< zero)
            let bigger = ax .> amax
            amax.replace(with: ax, where: bigger)
            mx.replace(with: xt[i], where: bigger)
        }
        return (mx, amax)
    }

    /// Lane j's levels back to sub-block j's place.
    @inline(__always) static func scatter8<T: FixedWidthInteger>(_ lv: UnsafePointer<I8>, _ n: Int, into L: UnsafeMutablePointer<T>) {
        for j in 0..<8 { for i in 0..<n { L[j * n + i] = T(truncatingIfNeeded: lv[i][j]) } }
    }

    /// - Parameters:
    ///   - x: eight sub-blocks of `n` values, one after another; `w` their weights, laid out alike.
    ///   - L: receives each sub-block's levels, laid out alike.
    /// - Returns: per lane (scale, -min), as the scalar search returns them.
    static func affineSearch8(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, weights w: UnsafePointer<Float>,
                              levels L: UnsafeMutablePointer<UInt8>, rmin: Float, rdelta: Float, nstep: Int,
                              absoluteError: Bool) -> (scale: F8, negMin: F8) {
        @inline(__always) func cost(_ d: F8) -> F8 { absoluteError ? d.replacing(with: -d, where: d .< 0) : d * d }
        return withUnsafeTemporaryAllocation(of: F8.self, capacity: 2 * n) { buf in
            withUnsafeTemporaryAllocation(of: I8.self, capacity: 2 * n) { levels in
                let xt = buf.baseAddress!, wt = xt + n, best = levels.baseAddress!, aux = best + n
                for i in 0..<n { xt[i] = gather8(x, n, i); wt[i] = gather8(w, n, i) }
                var lo = xt[0], hi = xt[0]
                var sumW = wt[0], sumX = wt[0] * xt[0]
                for i in 1..<n {
                    lo.replace(with: xt[i], where: xt[i] .< lo)
                    hi.replace(with: xt[i], where: xt[i] .> hi)
                    sumW += wt[i]
                    sumX += wt[i] * xt[i]
                }
                let zero = F8(repeating: 0)
                lo.replace(with: zero, where: lo .> zero)
                let flat = hi .== lo
                let fmax = F8(repeating: Float(nmax)), imax = I8(repeating: Int32(nmax)), izero = I8(repeating: 0)
                var iscale = fmax / (hi - lo)
                var scale = 1 / iscale
                var bestError = zero
                for i in 0..<n {
                    let l = clamp8(nearestInt8(iscale * (xt[i] - lo)), izero, imax)
                    best[i] = l
                    let diff = scale * F8(l) + lo - xt[i]
                    bestError += wt[i] * cost(diff)
                }
                for step in 0...nstep {
                    iscale = (F8(repeating: rmin + rdelta * Float(step)) + fmax) / (hi - lo)
                    var sumL = zero, sumL2 = zero, sumXL = zero
                    for i in 0..<n {
                        let l = clamp8(nearestInt8(iscale * (xt[i] - lo)), izero, imax)
                        aux[i] = l
                        let fl = F8(l)
                        sumL += wt[i] * fl
                        sumL2 += wt[i] * fl * fl
                        sumXL += wt[i] * fl * xt[i]
                    }
                    let det = sumW * sumL2 - sumL * sumL
                    let usable = (det .> zero) .& .!flat
                    if !any(usable) { continue }
                    var thisScale = (sumW * sumXL - sumX * sumL) / det
                    var thisMin = (sumL2 * sumX - sumL * sumXL) / det
                    let clampMin = thisMin .> zero
                    thisScale.replace(with: sumXL / sumL2, where: clampMin)
                    thisMin.replace(with: zero, where: clampMin)
                    var err = zero
                    for i in 0..<n {
                        let diff = thisScale * F8(aux[i]) + thisMin - xt[i]
                        err += wt[i] * cost(diff)
                    }
                    let better = usable .& (err .< bestError)
                    if !any(better) { continue }
                    for i in 0..<n { best[i].replace(with: aux[i], where: better) }
                    bestError.replace(with: err, where: better)
                    scale.replace(with: thisScale, where: better)
                    lo.replace(with: thisMin, where: better)
                }
                // A flat sub-block (max == min after clamping the min to <= 0): levels 0, scale 0.
                for i in 0..<n { best[i].replace(with: izero, where: flat) }
                scale.replace(with: zero, where: flat)
                scatter8(best, n, into: L)
                return (scale, -lo)
            }
        }
    }
}

extension GGMLKQuantBlocks {
    /// `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)` for eight sub-blocks at once, one per
    /// lane, each lane in the scalar order (so bit for bit `symmetricSearch`'s results). `qw`: the
    /// importance weights laid out like `x`, or nil for x².
    static func symmetricSearch8(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, levels L: UnsafeMutablePointer<Int8>,
                                 weights qw: UnsafePointer<Float>?) -> F8 {
        return withUnsafeTemporaryAllocation(of: F8.self, capacity: 2 * n) { buf in
            withUnsafeTemporaryAllocation(of: I8.self, capacity: n) { levels in
                let xt = buf.baseAddress!, wt = xt + n, best = levels.baseAddress!
                for i in 0..<n {
                    xt[i] = gather8(x, n, i)
                    wt[i] = qw.map { gather8($0, n, i) } ?? xt[i] * xt[i]
                }
                let zero = F8(repeating: 0)
                let (mx, amax) = signedMax8(xt, n)
                let empty = amax .< F8(repeating: groupMaxEps)
                let fmax = F8(repeating: Float(nmax)), lowest = I8(repeating: Int32(-nmax)), highest = I8(repeating: Int32(nmax - 1))
                let offset = I8(repeating: Int32(nmax))
                var iscale = -fmax / mx
                var sumLX = zero, sumL2 = zero
                for i in 0..<n {
                    let l = clamp8(nearestInt8(iscale * xt[i]), lowest, highest)
                    best[i] = l &+ offset
                    let fl = F8(l)
                    sumLX += wt[i] * xt[i] * fl
                    sumL2 += wt[i] * fl * fl
                }
                var scale = (sumLX / sumL2).replacing(with: zero, where: sumL2 .== zero)
                var bestValue = scale * sumLX
                for step in -9...9 where step != 0 {
                    iscale = -(fmax + F8(repeating: 0.1 * Float(step))) / mx
                    sumLX = zero; sumL2 = zero
                    for i in 0..<n {
                        let fl = F8(clamp8(nearestInt8(iscale * xt[i]), lowest, highest))
                        sumLX += wt[i] * xt[i] * fl
                        sumL2 += wt[i] * fl * fl
                    }
                    let better = (sumL2 .> zero) .& (sumLX * sumLX .> bestValue * sumL2) .& .!empty
                    if !any(better) { continue }
                    for i in 0..<n {
                        let l = clamp8(nearestInt8(iscale * xt[i]), lowest, highest)
                        best[i].replace(with: l &+ offset, where: better)
                    }
                    scale.replace(with: sumLX / sumL2, where: better)
                    bestValue.replace(with: scale * sumLX, where: better)
                }
                for i in 0..<n { best[i].replace(with: I8(repeating: 0), where: empty) }
                scale.replace(with: zero, where: empty)
                scatter8(best, n, into: L)
                return scale
            }
        }
    }
}

extension GGMLKQuantBlocks {
    /// `make_q3_quants(n, nmax, x, L, do_rmse = true)` (symmetric levels -nmax...nmax-1 refined by
    /// coordinate descent with weights x²; L gets level + nmax, all-zero input L = 0 and scale 0) for
    /// eight sub-blocks at once, one per lane in ggml's order. A lane whose sweep changed nothing would
    /// change nothing in the next sweep either, so running the remaining sweeps on every lane equals
    /// the scalar early exit.
    static func symmetricRefine8(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, levels L: UnsafeMutablePointer<Int8>) -> F8 {
        return withUnsafeTemporaryAllocation(of: F8.self, capacity: n) { buf in
            withUnsafeTemporaryAllocation(of: I8.self, capacity: n) { levels in
                let xt = buf.baseAddress!, lv = levels.baseAddress!
                for i in 0..<n { xt[i] = gather8(x, n, i) }
                let zero = F8(repeating: 0)
                let (mx, amax) = signedMax8(xt, n)
                let empty = amax .< F8(repeating: groupMaxEps)
                let lowest = I8(repeating: Int32(-nmax)), highest = I8(repeating: Int32(nmax - 1))
                let iscale = -F8(repeating: Float(nmax)) / mx
                var sumLX = zero, sumL2 = zero
                for i in 0..<n {
                    let l = clamp8(nearestInt8(iscale * xt[i]), lowest, highest)
                    lv[i] = l
                    let w = xt[i] * xt[i], fl = F8(l)
                    sumLX += w * xt[i] * fl
                    sumL2 += w * fl * fl
                }
                for _ in 0..<5 {
                    var changed = SIMDMask<I8>(repeating: false)
                    for i in 0..<n {
                        let w = xt[i] * xt[i], li = F8(lv[i])
                        var slx = sumLX - w * xt[i] * li
                        let positive = slx .> zero
                        if !any(positive) { continue }
                        var sl2 = sumL2 - w * li * li
                        let newL = clamp8(nearestInt8(xt[i] * sl2 / slx), lowest, highest)
                        let differs = positive .& (newL .!= lv[i])
                        if !any(differs) { continue }
                        let fn = F8(newL)
                        slx += w * xt[i] * fn
                        sl2 += w * fn * fn
                        let accept = differs .& (sl2 .> zero) .& (slx * slx * sumL2 .> sumLX * sumLX * sl2)
                        lv[i].replace(with: newL, where: accept)
                        sumLX.replace(with: slx, where: accept)
                        sumL2.replace(with: sl2, where: accept)
                        changed .|= accept
                    }
                    if !any(changed) { break }
                }
                let offset = I8(repeating: Int32(nmax))
                for i in 0..<n { lv[i] = (lv[i] &+ offset).replacing(with: I8(repeating: 0), where: empty) }
                scatter8(lv, n, into: L)
                return (sumLX / sumL2).replacing(with: zero, where: .!(sumL2 .> zero) .| empty)
            }
        }
    }
}
