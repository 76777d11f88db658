/// SCE: select the entries where the models' deltas vary most, weight each model by its delta's
/// energy, elect signs as TIES does, and average the agreeing deltas.
struct SCEMerge: MergeMethod {
    let name = "sce"
    let base = BaseRole.required
    let modelCount = 1...Int.max
    let globalParameters = [ParameterSpec("select_topk", .number(1), "fraction of entries (by variance across models) to keep", range: 0...1),
                            ParameterSpec("int8_mask", .bool(false), "accepted for mergekit compatibility; no numeric effect")]
    let modelParameters: [ParameterSpec] = []

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        let base = c.base!
        let n = c.count, M = c.models.count
        var T = c.models.map { VectorMath.sub($0, base) }
        let topk = c.number("select_topk")
        if topk < 1 {
            // Population variance across models, per entry.
            var variance = [Float](repeating: 0, count: n)
            for i in 0..<n {
                var s = 0.0, sq = 0.0
                for m in 0..<M { let v = Double(T[m][i]); s += v; sq += v * v }
                let mean = s / Double(M)
                variance[i] = Float(max(0, sq / Double(M) - mean * mean))
            }
            let nonzero = variance.filter { $0 != 0 }.count
            let keep = Sparsifier.topK(variance, Int(Double(nonzero) * topk))
            for m in 0..<M { for i in 0..<n where !keep[i] { T[m][i] = 0 } }
        }
        let energy = T.map { VectorMath.dot($0, $0) / Double(max(1, n)) }
        let total = energy.reduce(0, +)
        let w = total < 1e-6 ? Array(repeating: 1 / Double(M), count: M) : energy.map { $0 / total }
        var out = [Float](repeating: 0, count: n)
        for i in 0..<n {
            var s = 0.0
            for m in 0..<M { s += Double(T[m][i]) }
            let positive = s >= 0
            var num = 0.0, den = 0.0
            for m in 0..<M {
                let v = Double(T[m][i])
                if (positive && v > 0) || (!positive && v < 0) { num += v * w[m]; den += w[m] }
            }
            out[i] = base[i] + Float(num / max(den, 1e-6))
        }
        return MergeOutput(values: out, metrics: [("model_weights", .array(w.map { .double($0) }))])
    }
}
