#if canImport(Glibc)
import Glibc
#endif

/// Error of an approximation (a dtype conversion, a quantization) against the source values, over
/// the finite ones (a finite value that becomes Inf or NaN makes the error infinite).
struct ErrorAccumulator {
    var maxAbs = 0.0
    var errSq = 0.0
    var refSq = 0.0
    /// Values compared.
    var count = 0

    @inline(__always) mutating func add(_ ref: Double, _ got: Double) {
        guard ref.isFinite else { return }
        count += 1
        let d = got - ref
        let ad = d.isNaN ? Double.infinity : abs(d)
        maxAbs = max(maxAbs, ad)
        errSq += d * d
        refSq += ref * ref
    }

    /// The same over f32 blocks: the difference of an f32 value and its rounding is exact in f32,
    /// and the squares are summed in f32 over groups of 8 x 512 entries, then in f64.
    mutating func add(_ ref: UnsafePointer<Float>, _ got: UnsafePointer<Float>, count n: Int) {
        typealias V = SIMD8<Float>
        let rr = UnsafeRawPointer(ref), rg = UnsafeRawPointer(got)
        let inf = V(repeating: .infinity)
        var i = 0
        count += n - n % 8  // the scalar tail counts its own
        while i + 8 <= n {
            let end = min(n - (n - i) % 8, i + 8 * 512)
            var mx = V(), es = V(), rs = V()
            while i < end {
                let r = rr.loadUnaligned(fromByteOffset: 4 * i, as: V.self)
                let g = rg.loadUnaligned(fromByteOffset: 4 * i, as: V.self)
                let finite = (r .< inf) .& (r .> -inf)                  // false for NaN and Inf
                var d = (g - r).replacing(with: 0, where: .!finite)
                d.replace(with: inf, where: d .!= d)                     // finite -> NaN: infinite error
                d.replace(with: -d, where: d .< 0)
                let r0 = r.replacing(with: 0, where: .!finite)
                mx.replace(with: d, where: d .> mx)   // pointwiseMax is a generic call here, not inlined
                es += d * d
                rs += r0 * r0
                i += 8
            }
            maxAbs = max(maxAbs, Double(mx.max()))
            errSq += Double(es.sum())
            refSq += Double(rs.sum())
        }
        while i < n { add(Double(ref[i]), Double(got[i])); i += 1 }
    }

    var relative: Double { refSq > 0 ? (errSq / refSq).squareRoot() : (errSq > 0 ? .infinity : 0) }
    var meanSquared: Double { count > 0 ? errSq / Double(count) : 0 }
    /// Signal-to-quantization-noise ratio, 10 log10(Σ ref² / Σ err²) dB (infinite when exact).
    var sqnrDB: Double { errSq > 0 ? 10 * log10(refSq / errSq) : .infinity }

    mutating func merge(_ o: ErrorAccumulator) {
        maxAbs = max(maxAbs, o.maxAbs); errSq += o.errSq; refSq += o.refSq; count += o.count
    }
}
