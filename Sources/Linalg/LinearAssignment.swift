import CAssign

/// The linear assignment problem on a dense square matrix: the permutation `col[i]` that
/// maximises (or minimises) sum_i C[i, col[i]].
///
/// Jonker-Volgenant in f64 (CAssign's `wt_lap_minimize`): column reduction and reduction
/// transfer (on the near-permutation matrices of weight matching most rows are assigned there),
/// two rounds of augmenting row reduction (an auction step that settles most of the rest), then
/// one shortest augmenting path per row still free, a Dijkstra search over reduced costs whose
/// passes run over whole rows in AVX2. The answer is an exact optimum, as scipy's
/// `linear_sum_assignment` (shortest augmenting paths alone, Crouse 2016) gives; where several
/// optima exist the two may pick different ones.
public enum LinearAssignment {
    public enum Failure: Error, CustomStringConvertible, Sendable {
        case nonFinite(row: Int, col: Int)
        public var description: String {
            switch self {
            case let .nonFinite(r, c): return "the cost matrix holds a NaN or infinite value at (\(r), \(c))"
            }
        }
    }

    /// Solves an n x n problem given row-major. Deterministic, and the same for any `threads`
    /// (with 2 or more, the shortest-path passes of matrices of n >= 1024 use two threads); a
    /// constant matrix gives the identity (a row whose best columns tie takes a free one rather
    /// than displace an owner).
    public static func solve(_ cost: UnsafeBufferPointer<Double>, n: Int, maximize: Bool, threads: Int = 1) throws -> [Int] {
        precondition(cost.count == n * n, "LinearAssignment: \(cost.count) values for \(n)x\(n)")
        if n == 0 { return [] }
        for k in 0..<(n * n) where !cost[k].isFinite { throw Failure.nonFinite(row: k / n, col: k % n) }
        // Work on a minimisation copy: negating is exact in floating point.
        let c = UnsafeMutablePointer<Double>.allocate(capacity: n * n)
        defer { c.deallocate() }
        if maximize { for k in 0..<(n * n) { c[k] = -cost[k] } } else { for k in 0..<(n * n) { c[k] = cost[k] } }
        return solveMinimizing(c, n: n, threads: threads)
    }

    public static func solve(_ cost: [Double], n: Int, maximize: Bool, threads: Int = 1) throws -> [Int] {
        try cost.withUnsafeBufferPointer { try solve($0, n: n, maximize: maximize, threads: threads) }
    }

    /// Sum of C[i, col[i]].
    public static func objective(_ cost: UnsafeBufferPointer<Double>, n: Int, _ col: [Int]) -> Double {
        var s = 0.0
        for i in 0..<n { s += cost[i * n + col[i]] }
        return s
    }

    private static func solveMinimizing(_ c: UnsafeMutablePointer<Double>, n: Int, threads: Int) -> [Int] {
        var col = [Int](repeating: 0, count: n)
        let rc = col.withUnsafeMutableBufferPointer { wt_lap_minimize(c, n, $0.baseAddress!, Int32(threads)) }
        // Its scratch is a few n-sized arrays, next to the n x n matrix the caller already holds.
        precondition(rc == 0, "LinearAssignment: out of memory for \(n) columns of scratch")
        return col
    }
}
