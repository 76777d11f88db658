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
    /// ||Δ||_F² / σ₁² (1 for a rank-one change; the rank for a flat spectrum); nil for 1-D or Δ = 0
    /// (or when LAPACK fails on it).
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
        // σ₁ from the SVD engine lowrank-svd uses: exact where that is cheap, else randomized
        // rank 1 (with its oversampling and power iterations), seeded by the tensor's name.
        let opts = SVDChoice().options(rank: 1, rows: rows, cols: cols, stream: "audit:" + name)
        let sigma = dn > 0 ? (try? TruncatedSVD(Matrix(rows: rows, cols: cols, data: delta), rank: 1, options: opts))?.s.first : nil
        stableRank = sigma.flatMap { $0 > 0 ? dn / (Double($0) * Double($0)) : nil }
    }
}
