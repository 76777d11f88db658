import SafeTensors
import Linalg

/// What a fine-tune did to one tensor, measured for `task-vector audit`: the size of the change,
/// how it spreads over rows (output channels) and columns (inputs), and its stable rank.
struct TensorChange: Sendable {
    let name: String
    let shape: [Int]
    let deltaNorm: Double
    let baseNorm: Double
    /// NaN or ±Inf entries in the fine-tune (or its delta).
    let nonfinite: Int
    /// ||Δ[i, :]|| per row and ||Δ[:, j]|| per column (2-D and higher: rows = first axis).
    let rowNorms: [Double]
    let columnNorms: [Double]
    /// ||Δ||_F² / σ₁² (1 for a rank-one change; the rank for a flat spectrum); nil for 1-D or Δ = 0.
    let stableRank: Double?

    /// Δ = fine-tune − base in f64 per entry, stored in f32; `base` nil means `values` is already Δ.
    init(name: String, shape: [Int], fineTuned values: [Float], base: [Float]?) {
        self.name = name
        self.shape = shape
        var delta = values
        var bad = 0
        var dn = 0.0, bn = 0.0
        for i in values.indices {
            let b = base.map { Double($0[i]) } ?? 0
            let d = Double(values[i]) - b
            if !d.isFinite || !values[i].isFinite { bad += 1; delta[i] = 0; continue }
            delta[i] = Float(d)
            dn += d * d
            bn += b * b
        }
        nonfinite = bad
        deltaNorm = dn.squareRoot()
        baseNorm = bn.squareRoot()
        guard shape.count >= 2, let rows = shape.first, rows > 0, values.count > 0 else {
            rowNorms = []; columnNorms = []; stableRank = nil
            return
        }
        let cols = values.count / rows
        var r = [Double](repeating: 0, count: rows), c = [Double](repeating: 0, count: cols)
        delta.withUnsafeBufferPointer { d in
            for i in 0..<rows {
                var s = 0.0
                for j in 0..<cols {
                    let x = Double(d[i * cols + j])
                    s += x * x
                    c[j] += x * x
                }
                r[i] = s
            }
        }
        rowNorms = r.map { $0.squareRoot() }
        columnNorms = c.map { $0.squareRoot() }
        stableRank = dn > 0 ? dn / TensorChange.largestSquaredSingularValue(delta, rows: rows, cols: cols, stream: name) : nil
    }

    /// σ₁² by power iteration on ΔᵀΔ (BLAS matrix-vector products), from a start vector seeded by
    /// the tensor's name: 50 steps or until the estimate moves less than 1e-6 relatively.
    static func largestSquaredSingularValue(_ d: [Float], rows: Int, cols: Int, stream: String) -> Double {
        var rng = SeededRNG(seed: 0, stream: "audit:" + stream)
        var v = (0..<cols).map { _ in rng.nextGaussian() }
        var u = [Float](repeating: 0, count: rows)
        var estimate = 0.0
        for _ in 0..<50 {
            let norm = v.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            guard norm > 0 else { return 0 }
            for j in v.indices { v[j] = Float(Double(v[j]) / norm) }
            d.withUnsafeBufferPointer { a in
                v.withUnsafeBufferPointer { x in
                    u.withUnsafeMutableBufferPointer { y in
                        sgemm(transA: false, transB: false, m: rows, n: 1, k: cols, a.baseAddress!, lda: cols, x.baseAddress!, ldb: 1, into: y.baseAddress!)
                    }
                }
            }
            let next = u.reduce(0.0) { $0 + Double($1) * Double($1) }   // ||Δv||² with ||v|| = 1
            d.withUnsafeBufferPointer { a in
                u.withUnsafeBufferPointer { x in
                    v.withUnsafeMutableBufferPointer { y in
                        sgemm(transA: true, transB: false, m: cols, n: 1, k: rows, a.baseAddress!, lda: cols, x.baseAddress!, ldb: 1, into: y.baseAddress!)
                    }
                }
            }
            if abs(next - estimate) <= 1e-6 * next { return next }
            estimate = next
        }
        return estimate
    }
}
