/// Which entries a pruning rule removes, from non-negative scores (lower = pruned first).
///
/// The rules are exact and documented: a scope prunes exactly floor(count * sparsity) entries; ties
/// are pruned lower index first (the order of a stable ascending sort). Selection finds the k-th
/// smallest score by radix selection on the float bits, not by sorting.
public enum PruneMask {
    /// `true` = pruned. The `k` smallest scores of `scores` (ties: lower index first).
    public static func smallest(_ scores: UnsafeBufferPointer<Float>, _ k: Int) -> [Bool] {
        let n = scores.count
        guard k > 0 else { return Array(repeating: false, count: n) }
        guard k < n else { return Array(repeating: true, count: n) }
        // k-th smallest = (n - k + 1)-th largest; scores are >= 0, so |s| = s.
        let t = Sparsifier.kthLargestMagnitude(scores, n - k + 1)
        var below = 0
        for i in 0..<n { below &+= scores[i] < t ? 1 : 0 }
        var ties = k - below
        return [Bool](unsafeUninitializedCapacity: n) { out, done in
            for i in 0..<n {
                let s = scores[i]
                let eq = s == t
                out[i] = s < t || (eq && ties > 0)
                if eq && out[i] { ties -= 1 }
            }
            done = n
        }
    }

    /// Per row of `cols`: the floor(cols * sparsity) smallest of each row.
    public static func perRow(_ scores: UnsafeBufferPointer<Float>, cols: Int, sparsity: Double) -> [Bool] {
        let rows = cols > 0 ? scores.count / cols : 0
        let k = Int(Double(cols) * sparsity)
        var out = [Bool](repeating: false, count: scores.count)
        for r in 0..<rows {
            let row = UnsafeBufferPointer(rebasing: scores[(r * cols)..<((r + 1) * cols)])
            let m = smallest(row, k)
            for j in 0..<cols where m[j] { out[r * cols + j] = true }
        }
        return out
    }

    /// N:M along each row: in every M consecutive entries keep the N largest scores (prune the
    /// M - N smallest; ties: lower index pruned first).
    public static func nm(_ scores: UnsafeBufferPointer<Float>, cols: Int, n keep: Int, m: Int) -> [Bool] {
        var out = [Bool](repeating: false, count: scores.count)
        var idx = [Int](repeating: 0, count: m)
        var g = 0
        while g + m <= scores.count {
            for j in 0..<m { idx[j] = g + j }
            // Stable ascending by score: insertion sort of M (4 or 8) entries.
            for a in 1..<m {
                let x = idx[a]
                var b = a - 1
                while b >= 0 && scores[idx[b]] > scores[x] { idx[b + 1] = idx[b]; b -= 1 }
                idx[b + 1] = x
            }
            for j in 0..<(m - keep) { out[idx[j]] = true }
            g += m
        }
        return out
    }
}
