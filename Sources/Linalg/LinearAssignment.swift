import CAssign

/// The linear assignment problem on a dense square matrix: the permutation `col[i]` that
/// maximises (or minimises) sum_i C[i, col[i]].
///
/// Jonker-Volgenant in f64 (CAssign's `wt_lap_solve`): column reduction and reduction
/// transfer (on the near-permutation matrices of weight matching most rows are assigned there),
/// two rounds of augmenting row reduction (an auction step that settles most of the rest), then
/// one shortest augmenting path per row still free, a Dijkstra search over reduced costs whose
/// passes run over whole rows in AVX2 (split over two threads on large matrices). The answer is
/// an exact optimum, as scipy's `linear_sum_assignment` (shortest augmenting paths alone, Crouse
/// 2016) gives; where several optima exist the two may pick different ones.
public enum LinearAssignment {
    public enum Failure: Error, CustomStringConvertible, Sendable {
        case nonFinite(row: Int, col: Int)
        case tooLarge(row: Int, col: Int)
        public var description: String {
            switch self {
            case let .nonFinite(r, c): return "the cost matrix holds a NaN or infinite value at (\(r), \(c))"
            case let .tooLarge(r, c): return "the cost matrix holds a value above 1e300 in magnitude at (\(r), \(c)) (sums of such values overflow)"
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
        var col = [Int](repeating: 0, count: n)
        var bad = 0
        let rc = col.withUnsafeMutableBufferPointer {
            wt_lap_solve(cost.baseAddress!, n, maximize ? 1 : 0, $0.baseAddress!, Int32(threads), &bad)
        }
        if rc == -2 { throw Failure.nonFinite(row: bad / n, col: bad % n) }
        if rc == -3 { throw Failure.tooLarge(row: bad / n, col: bad % n) }
        // Its scratch is a few n-sized arrays (the matrix is negated where it is read).
        precondition(rc == 0, "LinearAssignment: out of memory for an \(n) x \(n) problem")
        return col
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
}
