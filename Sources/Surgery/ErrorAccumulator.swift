import CQuant
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
    /// and the squares are summed in f32 over groups of 8 x 512 entries, then in f64 (in C,
    /// `wt_error_add`, with an AVX2 path: every quantize job measures every value it writes).
    mutating func add(_ ref: UnsafePointer<Float>, _ got: UnsafePointer<Float>, count n: Int) {
        wt_error_add(ref, got, n, &maxAbs, &errSq, &refSq)
        count += n - n % 8  // the scalar tail counts its own
        for i in (n - n % 8)..<n { add(Double(ref[i]), Double(got[i])) }
    }

    var relative: Double { refSq > 0 ? (errSq / refSq).squareRoot() : (errSq > 0 ? .infinity : 0) }
    var meanSquared: Double { count > 0 ? errSq / Double(count) : 0 }
    /// Signal-to-quantization-noise ratio, 10 log10(Σ ref² / Σ err²) dB (infinite when exact).
    var sqnrDB: Double { errSq > 0 ? 10 * log10(refSq / errSq) : .infinity }

    mutating func merge(_ o: ErrorAccumulator) {
        maxAbs = max(maxAbs, o.maxAbs); errSq += o.errSq; refSq += o.refSq; count += o.count
    }
}
