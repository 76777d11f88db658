/// Model Stock (Jang et al.): interpolate between the base and the fine-tunes' average with
/// t = N c / (1 + (N - 1) c), c the mean pairwise cosine of the fine-tunes' deltas.
struct ModelStockMerge: MergeMethod {
    let name = "model_stock"
    let base = BaseRole.required
    let modelCount = 2...Int.max
    let globalParameters = [ParameterSpec("filter_wise", .bool(false), "one ratio per row instead of per tensor")]
    let modelParameters: [ParameterSpec] = []

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        let base = c.base!
        let n = c.count, N = c.models.count
        let deltas = c.models.map { VectorMath.sub($0, base) }
        let rows = c.flag("filter_wise") && c.shape.count >= 2 ? c.shape[0] : 1
        let len = n / max(1, rows)
        var out = [Float](repeating: 0, count: n)
        var ts: [Double] = []
        for r in 0..<rows {
            let lo = r * len, hi = lo + len
            var cosSum = 0.0, pairs = 0
            for i in 0..<N {
                for j in (i + 1)..<N {
                    var dot = 0.0, ni = 0.0, nj = 0.0
                    for k in lo..<hi {
                        let a = Double(deltas[i][k]), b = Double(deltas[j][k])
                        dot += a * b; ni += a * a; nj += b * b
                    }
                    cosSum += min(1, max(-1, dot / max(ni.squareRoot() * nj.squareRoot(), 1e-6)))
                    pairs += 1
                }
            }
            let cbar = cosSum / Double(pairs)
            let t = Double(N) * cbar / (1 + Double(N - 1) * cbar)
            ts.append(t)
            for k in lo..<hi {
                var mean = 0.0
                for m in 0..<N { mean += Double(c.models[m][k]) }
                mean /= Double(N)
                out[k] = Float(t * mean + (1 - t) * Double(base[k]))
            }
        }
        let metric: (String, JSONValue) = rows == 1 ? ("ratio_t", .double(ts[0])) : ("ratio_t_mean", .double(ts.reduce(0, +) / Double(ts.count)))
        return MergeOutput(values: out, metrics: [metric])
    }
}

import SafeTensors

extension ModelStockMerge: StreamedMergeMethod {
    /// Per tensor: a pass for the pairwise sums (sequential in index order, as `merge` sums), then
    /// the output pass. filter_wise: every row sits whole in one block, so one pass does both.
    func mergeStreamed(_ c: StreamedMergeContext, write: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws -> [(String, JSONValue)] {
        let N = c.models.count, P = N * (N - 1) / 2
        let rowWise = c.flag("filter_wise") && c.shape.count >= 2
        let len = rowWise ? c.rowLength : c.count
        /// Sums (dot, ||i||², ||j||²) per pair over entries [lo, hi) of one block, added to `s`.
        func accumulate(_ s: inout [(Double, Double, Double)], _ base: UnsafeMutablePointer<Float>, _ models: [UnsafeMutablePointer<Float>], _ lo: Int, _ hi: Int) {
            var p = 0
            for i in 0..<N {
                for j in (i + 1)..<N {
                    var (dot, ni, nj) = s[p]
                    for k in lo..<hi {
                        let a = Double(models[i][k] - base[k]), b = Double(models[j][k] - base[k])
                        dot += a * b; ni += a * a; nj += b * b
                    }
                    s[p] = (dot, ni, nj); p += 1
                }
            }
        }
        func ratio(_ s: [(Double, Double, Double)]) -> Double {
            var cosSum = 0.0
            for (dot, ni, nj) in s { cosSum += min(1, max(-1, dot / max(ni.squareRoot() * nj.squareRoot(), 1e-6))) }
            let cbar = cosSum / Double(P)
            return Double(N) * cbar / (1 + Double(N - 1) * cbar)
        }
        func output(_ t: Double, _ base: UnsafeMutablePointer<Float>, _ models: [UnsafeMutablePointer<Float>], _ lo: Int, _ hi: Int, into out: UnsafeMutablePointer<Float>) {
            for k in lo..<hi {
                var mean = 0.0
                for m in 0..<N { mean += Double(models[m][k]) }
                mean /= Double(N)
                out[k] = Float(t * mean + (1 - t) * Double(base[k]))
            }
        }
        let out = UnsafeMutablePointer<Float>.allocate(capacity: max(1, c.blockLength))
        defer { out.deallocate() }
        var ts: [Double] = []
        if rowWise {
            try c.pass { start, n, base, models in
                var lo = 0
                while lo < n {
                    var s = [(Double, Double, Double)](repeating: (0, 0, 0), count: P)
                    accumulate(&s, base!, models, lo, lo + len)
                    let t = ratio(s)
                    ts.append(t)
                    output(t, base!, models, lo, lo + len, into: out)
                    lo += len
                }
                try write(start, UnsafeBufferPointer(start: out, count: n))
            }
        } else {
            var s = [(Double, Double, Double)](repeating: (0, 0, 0), count: P)
            c.pass { _, n, base, models in accumulate(&s, base!, models, 0, n) }
            let t = ratio(s)
            ts = [t]
            try c.pass { start, n, base, models in
                output(t, base!, models, 0, n, into: out)
                try write(start, UnsafeBufferPointer(start: out, count: n))
            }
        }
        return [ts.count == 1 ? ("ratio_t", .double(ts[0])) : ("ratio_t_mean", .double(ts.reduce(0, +) / Double(ts.count)))]
    }
}
