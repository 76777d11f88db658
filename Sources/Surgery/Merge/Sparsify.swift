import Linalg

/// How kept entries are rescaled after random dropping (DARE, DELLA).
public enum RescaleRule: String, Sendable {
    /// mergekit's: scale the kept entries so the L1 norm of the delta is unchanged.
    case l1
    /// The DARE paper's: divide each kept entry by its keep probability.
    case inverseDensity = "inverse_density"
}

/// The sparsifiers of the task-arithmetic family (mergekit's sparsify.py, with its bugs fixed).
/// Each keeps a subset of a delta's entries and zeroes the rest; `kept` counts the survivors.
public enum Sparsifier: Sendable {
    case magnitude
    case magnitudeOutliers   // breadcrumbs
    case random              // DARE
    case dellaMagprune       // DELLA

    public struct Result { var values: [Float]; var kept: Int }

    /// - Parameters:
    ///   - shape: DELLA ranks within rows (the first dimension indexes rows; 1-D is one row).
    ///   - density: fraction to keep (>= 1 keeps everything).
    ///   - gamma: breadcrumbs' fraction of the largest entries to drop.
    ///   - epsilon: DELLA's spread of keep probabilities around the density.
    ///   - rescale: for the random sparsifiers, nil for none.
    ///   - rng: seeded per tensor and model by the caller.
    func apply(_ delta: [Float], shape: [Int], density: Double, gamma: Double, epsilon: Double, rescale: RescaleRule?,
               rng: inout SeededRNG, tensor: String) throws -> Result {
        let n = delta.count
        if density >= 1 { return Result(values: delta, kept: delta.filter { $0 != 0 }.count) }
        switch self {
        case .magnitude:
            let k = Int(density * Double(n))
            let keep = Sparsifier.topK(delta, k)
            return Result(values: delta.indices.map { keep[$0] ? delta[$0] : 0 }, kept: k)
        case .magnitudeOutliers:
            // Keep the middle of the |delta| order: drop the gamma*N largest and the rest of the
            // (1 - density) from the smallest. mergekit's slice [bot:-top] is empty when top = 0
            // and zeroes the whole delta; here top = 0 keeps everything above the bottom.
            let keepN = Int(density * Double(n))
            var top = Int(gamma * Double(n))
            var bot = n - keepN - top
            if bot < 0 { top += bot; bot = 0 }
            let order = Sparsifier.ascendingMagnitudeOrder(delta)
            var out = [Float](repeating: 0, count: n)
            for r in bot..<(n - top) { out[order[r]] = delta[order[r]] }
            return Result(values: out, kept: n - top - bot)
        case .random:
            guard density > 0 else { return Result(values: Array(repeating: 0, count: n), kept: 0) }
            var out = [Float](repeating: 0, count: n)
            var kept = 0
            let scale = rescale == .inverseDensity ? Float(1 / density) : 1
            for i in 0..<n where Double(rng.nextUnitFloat()) < density {
                out[i] = delta[i] * scale
                kept += 1
            }
            if rescale == .l1 { Sparsifier.rescaleL1(&out, original: delta) }
            return Result(values: out, kept: kept)
        case .dellaMagprune:
            guard density > 0 else { return Result(values: Array(repeating: 0, count: n), kept: 0) }
            guard density - epsilon > 0, density + epsilon < 1 else {
                throw UsageError("della: needs 0 < density - epsilon and density + epsilon < 1 (density \(density), epsilon \(epsilon)) for '\(tensor)'")
            }
            // Per row (a 1-D tensor is one row): keep probability linear in the magnitude rank.
            let cols = shape.count >= 2 && shape[0] > 0 ? n / shape[0] : max(1, n)
            var out = [Float](repeating: 0, count: n)
            var kept = 0
            var row = 0
            while row * cols < n {
                let lo = row * cols, hi = min(n, lo + cols)
                let slice = Array(delta[lo..<hi])
                let order = Sparsifier.ascendingMagnitudeOrder(slice)
                var p = [Double](repeating: density, count: slice.count)
                if slice.count > 1 {
                    for (rank, idx) in order.enumerated() {
                        p[idx] = min(1, max(0, (density - epsilon) + 2 * epsilon * Double(rank) / Double(slice.count - 1)))
                    }
                }
                for j in 0..<slice.count where Double(rng.nextUnitFloat()) < p[j] {
                    out[lo + j] = rescale == .inverseDensity ? Float(Double(slice[j]) / p[j]) : slice[j]
                    kept += 1
                }
                row += 1
            }
            if rescale == .l1 { Sparsifier.rescaleL1(&out, original: delta) }
            return Result(values: out, kept: kept)
        }
    }

    /// m * (Σ|original| / Σ|m|), unless either sum is below 1e-7 (mergekit's guard).
    static func rescaleL1(_ m: inout [Float], original: [Float]) {
        let b = VectorMath.sumAbs(original), a = VectorMath.sumAbs(m)
        guard b >= 1e-7, a >= 1e-7 else { return }
        let s = Float(b / a)
        for i in m.indices { m[i] *= s }
    }

    /// Marks the k entries of largest magnitude (ties: lower index first), by selecting the k-th
    /// largest magnitude (quickselect), not by sorting.
    static func topK(_ x: [Float], _ k: Int) -> [Bool] {
        let n = x.count
        guard k > 0 else { return Array(repeating: false, count: n) }
        guard k < n else { return Array(repeating: true, count: n) }
        var mags = x.map { abs($0) }
        let threshold = quickselect(&mags, k - 1)   // k-th largest
        var keep = [Bool](repeating: false, count: n)
        var above = 0
        for i in 0..<n where abs(x[i]) > threshold { keep[i] = true; above += 1 }
        var needed = k - above
        for i in 0..<n where needed > 0 && abs(x[i]) == threshold { keep[i] = true; needed -= 1 }
        return keep
    }

    /// The element that would be at position `k` of a descending sort (Hoare quickselect, median of 3).
    static func quickselect(_ a: inout [Float], _ k: Int) -> Float {
        var lo = 0, hi = a.count - 1
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            let pivot = max(min(a[lo], a[mid]), min(max(a[lo], a[mid]), a[hi]))
            var i = lo, j = hi
            while i <= j {
                while a[i] > pivot { i += 1 }
                while a[j] < pivot { j -= 1 }
                if i <= j { a.swapAt(i, j); i += 1; j -= 1 }
            }
            if k <= j { hi = j } else if k >= i { lo = i } else { return a[k] }
        }
        return a[k]
    }

    /// Indices sorted by |x| ascending, ties by index (a stable order).
    static func ascendingMagnitudeOrder(_ x: [Float]) -> [Int] {
        x.indices.sorted { abs(x[$0]) < abs(x[$1]) || (abs(x[$0]) == abs(x[$1]) && $0 < $1) }
    }
}
