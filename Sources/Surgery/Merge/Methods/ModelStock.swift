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
