import SafeTensors
import Foundation

/// Slerp between two models with weights (t = w1 / (w0 + w1)), of their deltas from an optional
/// base; over the whole tensor (flatten), or per row or column vector.
struct NuSlerpMerge: MergeMethod {
    let name = "nuslerp"
    let base = BaseRole.optional
    let modelCount = 2...2
    let globalParameters = [ParameterSpec("nuslerp_flatten", .bool(true), "one angle for the whole tensor"),
                            ParameterSpec("nuslerp_row_wise", .bool(false), "without flatten: vectors along the first dimension instead of the last")]
    let modelParameters = [ParameterSpec("weight", nil, "relative weight of this model")]

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        let w0 = c.modelNumber(0, "weight"), w1 = c.modelNumber(1, "weight")
        let t = abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1)
        var a = c.models[0], b = c.models[1]
        if let base = c.base { a = VectorMath.sub(a, base); b = VectorMath.sub(b, base) }
        let n = c.count
        // Vectors: one (flatten), rows of the last dimension, or columns along the first.
        let len: Int, stride: Int, count: Int
        if c.flag("nuslerp_flatten") || c.shape.count < 2 {
            (len, stride, count) = (n, 1, 1)
        } else if c.flag("nuslerp_row_wise") {
            (len, stride, count) = (c.shape[0], n / c.shape[0], n / c.shape[0])
        } else {
            (len, stride, count) = (c.shape.last!, 1, n / c.shape.last!)
        }
        var out = [Float](repeating: 0, count: n)
        for v in 0..<count {
            let start = stride == 1 ? v * len : v
            let step = stride
            var dab = 0.0, daa = 0.0, dbb = 0.0
            for k in 0..<len {
                let i = start + k * step
                dab += Double(a[i]) * Double(b[i]); daa += Double(a[i]) * Double(a[i]); dbb += Double(b[i]) * Double(b[i])
            }
            let na = max(daa.squareRoot(), 1e-7), nb = max(dbb.squareRoot(), 1e-7)
            let theta = acos(min(1, max(-1, dab / (na * nb)))), s = sin(theta)
            let (ca, cb) = abs(s) < 1e-8 ? (1 - t, t) : (sin((1 - t) * theta) / s, sin(t * theta) / s)
            for k in 0..<len {
                let i = start + k * step
                out[i] = Float(ca * Double(a[i]) + cb * Double(b[i]))
            }
        }
        if let base = c.base { for i in 0..<n { out[i] += base[i] } }
        return MergeOutput(values: out)
    }
}

extension NuSlerpMerge: StreamedMergeMethod {
    /// flatten: a pass for the three sums over the tensor, then the output; row_wise: a pass for
    /// per-column sums (each column sums over the rows in order, as `merge` does), then the output;
    /// otherwise every row is its own vector and one pass does all.
    func mergeStreamed(_ c: StreamedMergeContext, write: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws -> [(String, JSONValue)] {
        let w0 = c.modelNumber(0, "weight"), w1 = c.modelNumber(1, "weight")
        let t = abs(w0 + w1) < 1e-6 ? 0.5 : w1 / (w0 + w1)
        let flatten = c.flag("nuslerp_flatten") || c.shape.count < 2, rowWise = !flatten && c.flag("nuslerp_row_wise")
        let cols = flatten ? 1 : (rowWise ? c.rowLength : 1)
        func coefficients(_ dab: Double, _ daa: Double, _ dbb: Double) -> (Double, Double) {
            let na = max(daa.squareRoot(), 1e-7), nb = max(dbb.squareRoot(), 1e-7)
            let theta = acos(min(1, max(-1, dab / (na * nb)))), s = sin(theta)
            return abs(s) < 1e-8 ? (1 - t, t) : (sin((1 - t) * theta) / s, sin(t * theta) / s)
        }
        /// The deltas (or the models without a base), in place in the model blocks.
        func deltas(_ base: UnsafeMutablePointer<Float>?, _ m: [UnsafeMutablePointer<Float>], _ n: Int) {
            guard let base else { return }
            for k in 0..<n { m[0][k] -= base[k]; m[1][k] -= base[k] }
        }
        var dab = [Double](repeating: 0, count: cols), daa = dab, dbb = dab
        if flatten || rowWise {
            c.pass { start, n, base, m in
                deltas(base, m, n)
                for k in 0..<n {
                    let j = flatten ? 0 : (start + k) % cols
                    let a = Double(m[0][k]), b = Double(m[1][k])
                    dab[j] += a * b; daa[j] += a * a; dbb[j] += b * b
                }
            }
        }
        let coeffs = (0..<cols).map { coefficients(dab[$0], daa[$0], dbb[$0]) }
        let out = UnsafeMutablePointer<Float>.allocate(capacity: max(1, c.blockLength))
        defer { out.deallocate() }
        let len = c.shape.last ?? 1
        try c.pass { start, n, base, m in
            deltas(base, m, n)
            if flatten || rowWise {
                for k in 0..<n {
                    let (ca, cb) = coeffs[flatten ? 0 : (start + k) % cols]
                    out[k] = Float(ca * Double(m[0][k]) + cb * Double(m[1][k]))
                }
            } else {
                var lo = 0
                while lo < n {   // one vector per row of the last dimension
                    var ab = 0.0, aa = 0.0, bb = 0.0
                    for k in lo..<(lo + len) { let a = Double(m[0][k]), b = Double(m[1][k]); ab += a * b; aa += a * a; bb += b * b }
                    let (ca, cb) = coefficients(ab, aa, bb)
                    for k in lo..<(lo + len) { out[k] = Float(ca * Double(m[0][k]) + cb * Double(m[1][k])) }
                    lo += len
                }
            }
            if let base { for k in 0..<n { out[k] += base[k] } }
            try write(start, UnsafeBufferPointer(start: out, count: n))
        }
        return []
    }
}
