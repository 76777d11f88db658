#if canImport(Glibc)
import Glibc
#endif
import SafeTensors

/// HQQ (Badri & Shaji 2023, mobiusml/hqq `optimize_weights_proximal_legacy`), under the
/// constraints of the formats that store its result.
///
/// 1. HQQ proper: min-max on unsigned levels 0...2^b-1 (inverse scale (2^b-1)/(max-min), capped
///    at 2e4; zero -min·s), then each run's zero point optimised by half-quadratic splitting with
///    an l_p (p = 0.7) error: Wq = clamp(round(W·s + z)), Wr = (Wq - z)/s, We = shrink_p(W - Wr,
///    β), z = mean(Wq - (W - We)·s), stopping when the tensor's mean |W - Wr| stops falling (at
///    most 20 rounds, β = 10).
/// 2. The format: compressed-tensors (what vLLM and transformers compute with) stores integer
///    zero points in [0, 2^b-1] and scales in the weight's dtype, and decodes (q - z)·s. HQQ's
///    fractional zeros rounded afterwards lose most of the gain (measured: below plain RTN), so
///    each run is then optimised for squared error *within* that constraint, starting from
///    HQQ's zero (rounded both ways) and compressed-tensors' asymmetric RTN: clipping ratios
///    0.7...1 of the run's range with the integer zero re-derived, alternating least-squares fits
///    of (scale, zero) for fixed codes, and a fine scan of the scale with the zero ±1. Every
///    candidate is evaluated exactly as a reader decodes it (scale rounded to its dtype, codes
///    round-half-even), and the best one is kept, so the result is never worse than either start.
/// Fake output decodes the same integers, so it equals what compressed-tensors decodes.
public enum HQQ {
    public struct Result: Sendable {
        public var quantized: IntegerQuantized
        /// compressed-tensors' asymmetric min-max RTN of the same runs, for the side-by-side report.
        public var rtn: IntegerQuantized
        public var iterations: Int
    }

    public static let lpNorm: Float = 0.7
    public static let beta: Float = 10
    public static let maxIterations = 20
    /// Clipping ratios tried, least-squares rounds, and the scale scan (factors and zero offsets).
    static let clipRatios: [Float] = (0..<8).map { 1 - 0.3 * Float($0) / 7 }
    static let leastSquaresRounds = 4
    static let scanFactors: [Float] = (0..<24).map { 0.85 + 0.3 * Float($0) / 23 }

    public static func quantize(_ x: UnsafeBufferPointer<Float>, runLength: Int, bits: Int, scaleDType: DType) -> Result {
        let n = x.count, groups = n / runLength
        let umax = Float((1 << bits) - 1)
        let (zeros, inv, iterations) = proximalZeros(x, runLength: runLength, umax: umax, scaleDType: scaleDType)
        let rtn = IntegerRTN.quantize(x, runLength: runLength, bits: bits, symmetric: false, scaleDType: scaleDType)
        let offset = Float(1 << (bits - 1))  // unsigned level u = signed q + offset
        var out = IntegerQuantized(bits: bits, runLength: runLength, q: [Int8](repeating: 0, count: n),
                                   scale: [Float](repeating: 0, count: groups), zero: [Float](repeating: 0, count: groups))
        for g in 0..<groups {
            let run = UnsafeBufferPointer(rebasing: x[(g * runLength)..<((g + 1) * runLength)])
            var search = ConstrainedRun(run, umax: umax, scaleDType: scaleDType)
            let hs = roundTo(scaleDType, 1 / inv[g])
            search.consider(scale: hs, zero: zeros[g].rounded(.down))
            search.consider(scale: hs, zero: zeros[g].rounded(.up))
            search.consider(scale: rtn.scale[g], zero: rtn.zero[g] + offset)
            search.refine()
            out.scale[g] = search.scale
            out.zero[g] = search.zero - offset
            let s = search.scale, z = search.zero
            for i in 0..<runLength {
                out.q[g * runLength + i] = Int8(min(umax, max(0, roundHalfEven(run[i] / s + z))) - offset)
            }
        }
        return Result(quantized: out, rtn: rtn, iterations: iterations)
    }

    /// HQQ's own loop: fractional zero points (unsigned levels) and inverse scales.
    static func proximalZeros(_ x: UnsafeBufferPointer<Float>, runLength: Int, umax: Float, scaleDType: DType)
        -> (zeros: [Float], inverseScales: [Float], iterations: Int) {
        let n = x.count, groups = n / runLength
        var inv = [Float](repeating: 0, count: groups), z = [Float](repeating: 0, count: groups)
        for g in 0..<groups {
            var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
            for i in (g * runLength)..<((g + 1) * runLength) { lo = min(lo, x[i]); hi = max(hi, x[i]) }
            inv[g] = min(2e4, umax / (hi - lo))
            // The stored scale is 1/inv in the scale dtype: optimise against exactly that.
            inv[g] = 1 / roundTo(scaleDType, 1 / inv[g])
            z[g] = -lo * inv[g]
        }
        var best = Float(1e4), bestZ = z, iterations = 0
        var zNext = [Float](repeating: 0, count: groups)
        for _ in 0..<maxIterations {
            var absErr = 0.0
            for g in 0..<groups {
                let s = inv[g], zg = z[g]
                var acc: Float = 0, groupErr: Float = 0
                for i in (g * runLength)..<((g + 1) * runLength) {
                    let u = min(umax, max(0, (x[i] * s + zg).rounded(.toNearestOrEven)))
                    let d = x[i] - (u - zg) / s
                    groupErr += abs(d)
                    acc += u - (x[i] - shrink(d)) * s
                }
                zNext[g] = acc / Float(runLength)
                absErr += Double(groupErr)
            }
            let err = Float(absErr / Double(n))
            iterations += 1
            guard err < best else { break }
            best = err
            bestZ = z
            swap(&z, &zNext)
        }
        return (bestZ, inv, iterations)
    }

    /// The l_p shrinkage operator: sign(x) · max(|x| - |x|^(p-1) / β, 0).
    @inline(__always) static func shrink(_ v: Float) -> Float {
        let a = abs(v)
        let t = a - powf(a + 1e-8, lpNorm - 1) / beta
        return t > 0 ? (v < 0 ? -t : t) : 0
    }
}

/// The best (scale, integer zero) of one run for squared error, as a reader decodes it:
/// u = clamp(round_half_even(x / s + z), 0, umax), x' = (u - z) · s, s in the scale dtype.
struct ConstrainedRun {
    let x: UnsafeBufferPointer<Float>
    let umax: Float
    let scaleDType: DType
    private(set) var scale: Float = 1
    private(set) var zero: Float = 0
    private(set) var error = Double.infinity

    init(_ x: UnsafeBufferPointer<Float>, umax: Float, scaleDType: DType) {
        self.x = x; self.umax = umax; self.scaleDType = scaleDType
    }

    /// Squared error of one candidate (the scale already in its dtype).
    func squaredError(scale s: Float, zero z: Float) -> Double {
        var e: Float = 0
        for v in x {
            let u = min(umax, max(0, roundHalfEven(v / s + z)))
            let d = v - (u - z) * s
            e += d * d
        }
        return Double(e)
    }

    mutating func consider(scale raw: Float, zero rawZero: Float) {
        let s = roundTo(scaleDType, raw)
        guard s > 0, s.isFinite, rawZero.isFinite else { return }
        let z = min(umax, max(0, rawZero))
        let e = squaredError(scale: s, zero: z)
        if e < error { error = e; scale = s; zero = z }
    }

    /// Clipping ratios, alternating least squares, then a fine scan around the best.
    mutating func refine() {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for v in x { lo = min(lo, v); hi = max(hi, v) }
        guard hi > lo else { return }
        for r in HQQ.clipRatios {
            let s = roundTo(scaleDType, (hi - lo) * r / umax)
            guard s > 0 else { continue }
            consider(scale: s, zero: (-lo * r / s).rounded(.toNearestOrEven))
        }
        for _ in 0..<HQQ.leastSquaresRounds { leastSquaresStep() }
        let (s0, z0) = (scale, zero)
        for f in HQQ.scanFactors {
            for dz: Float in [-1, 0, 1] { consider(scale: s0 * f, zero: z0 + dz) }
        }
    }

    /// For the current codes: fit x ≈ a·u + c (f64), z = round(-c / a); then the least-squares
    /// scale for that integer zero with the same codes.
    private mutating func leastSquaresStep() {
        let s = scale, z = zero
        var su = 0.0, sx = 0.0, suu = 0.0, sux = 0.0
        let m = Double(x.count)
        for v in x {
            let u = Double(min(umax, max(0, roundHalfEven(v / s + z))))
            su += u; sx += Double(v); suu += u * u; sux += u * Double(v)
        }
        let varU = suu - su * su / m
        guard varU > 0 else { return }
        let a = (sux - su * sx / m) / varU
        guard a > 0 else { return }
        let c = (sx - a * su) / m
        let zi = Float((-c / a).rounded(.toNearestOrEven))
        consider(scale: Float(a), zero: zi)
        // Least-squares scale for the integer zero: Σ x (u - z) / Σ (u - z)².
        var num = 0.0, den = 0.0
        for v in x {
            let d = Double(min(umax, max(0, roundHalfEven(v / s + z)))) - Double(zi)
            num += Double(v) * d; den += d * d
        }
        if den > 0 { consider(scale: Float(num / den), zero: zi) }
    }
}
