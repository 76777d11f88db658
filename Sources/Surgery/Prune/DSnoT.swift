/// DSnoT (Zhang et al., "Dynamic Sparse No Training"): training-free prune-and-grow on top of an
/// initial mask, row by row. The expected output error a row's pruned weights cause is
/// err = Σ_{j pruned} w_j E[x_j]. While |err| is above a threshold and swapping would not flip its
/// sign, the pruned weight that best cancels err (ranked by w_j E[x_j] / Var[x_j]) is grown back and
/// a kept weight is pruned in exchange (unstructured: the lowest Wanda score among the kept weights
/// whose w_j E[x_j] has the sign that moves err towards 0; N:M: the lowest-scoring kept weight in the
/// grown weight's group, so every group keeps N). Every swap keeps the row's count.
public struct DSnoT: Sendable {
    public var maxCycles = 50
    public var threshold = 0.1
    public init() {}

    /// Refines `pruned` (true = pruned) for one row in place; returns the number of swaps.
    /// - Parameters:
    ///   - w: the row's weights; mean, variance: per input channel; score: the Wanda score of each
    ///     entry (the order in which kept weights are given up); nm: (keep N, of M) or nil.
    public func refine(_ pruned: inout ArraySlice<Bool>, w: ArraySlice<Float>, mean: [Double], variance: [Double],
                       score: ArraySlice<Float>, nm: (n: Int, m: Int)?) -> Int {
        let cols = w.count, base = w.startIndex, sBase = score.startIndex, pBase = pruned.startIndex
        let contribution = (0..<cols).map { Double(w[base + $0]) * mean[$0] }
        var err = 0.0
        for j in 0..<cols where pruned[pBase + j] { err += contribution[j] }
        let sign0 = err.sign == .minus ? -1.0 : (err == 0 ? 0 : 1)
        // Growth candidates: pruned entries, ascending by contribution / variance (stable).
        let grow = (0..<cols).filter { pruned[pBase + $0] }.sorted { a, b in
            let x = contribution[a] / max(variance[a], 1e-12), y = contribution[b] / max(variance[b], 1e-12)
            return x < y || (x == y && a < b)
        }
        var lo = 0, hi = grow.count - 1
        // Unstructured pruning candidates: kept entries ascending by Wanda score, those with a
        // negative contribution (pruned first while err >= 0) and those with a positive one.
        let kept = (0..<cols).filter { !pruned[pBase + $0] }.sorted { a, b in
            score[sBase + a] < score[sBase + b] || (score[sBase + a] == score[sBase + b] && a < b)
        }
        let negative = kept.filter { contribution[$0] < 0 }, positive = kept.filter { contribution[$0] > 0 }
        var ni = 0, pi = 0
        var blocked = [Bool](repeating: false, count: cols)   // N:M: entries not to prune (pruned at start or grown)
        for j in 0..<cols where pruned[pBase + j] { blocked[j] = true }
        var swaps = 0
        for _ in 0..<maxCycles {
            guard abs(err) > threshold, lo <= hi else { break }
            let r = err > 0 ? grow[hi] : grow[lo]
            let p: Int
            if let nm {
                let start = r - r % nm.m
                guard let q = (start..<(start + nm.m)).filter({ !blocked[$0] }).min(by: { a, b in
                    score[sBase + a] < score[sBase + b] || (score[sBase + a] == score[sBase + b] && a < b)
                }) else { break }
                p = q
            } else if err < 0 {
                guard pi < positive.count else { break }
                p = positive[pi]
            } else {
                guard ni < negative.count else { break }
                p = negative[ni]
            }
            let after = err + contribution[p] - contribution[r]
            let signAfter = after.sign == .minus ? -1.0 : (after == 0 ? 0 : 1)
            guard signAfter == sign0 else { break }
            pruned[pBase + p] = true
            pruned[pBase + r] = false
            blocked[p] = true
            if nm == nil { if err < 0 { pi += 1 } else { ni += 1 } }
            if err > 0 { hi -= 1 } else { lo += 1 }
            err = after
            swaps += 1
        }
        return swaps
    }
}
