/// The linear assignment problem on a dense square matrix: the permutation `col[i]` that
/// maximises (or minimises) sum_i C[i, col[i]].
///
/// Shortest augmenting paths (Jonker-Volgenant; Crouse 2016, the method of scipy's
/// `linear_sum_assignment`) in f64, after JV's column reduction: every column's cheapest row
/// starts with it when that row is free, so on the near-permutation matrices of weight matching
/// most rows need no search at all. Each remaining free row runs one Dijkstra search over reduced
/// costs C[i,j] - u[i] - v[j] (kept >= 0 by the duals), so the answer is an exact optimum.
public enum LinearAssignment {
    public enum Failure: Error, CustomStringConvertible, Sendable {
        case nonFinite(row: Int, col: Int)
        public var description: String {
            switch self {
            case let .nonFinite(r, c): return "the cost matrix holds a NaN or infinite value at (\(r), \(c))"
            }
        }
    }

    /// Solves an n x n problem given row-major. Ties go to the lower column index where the
    /// search allows, so a constant matrix gives the identity.
    public static func solve(_ cost: UnsafeBufferPointer<Double>, n: Int, maximize: Bool) throws -> [Int] {
        precondition(cost.count == n * n, "LinearAssignment: \(cost.count) values for \(n)x\(n)")
        if n == 0 { return [] }
        for k in 0..<(n * n) where !cost[k].isFinite { throw Failure.nonFinite(row: k / n, col: k % n) }
        // Work on a minimisation copy: negating is exact in floating point.
        let c = UnsafeMutablePointer<Double>.allocate(capacity: n * n)
        defer { c.deallocate() }
        if maximize { for k in 0..<(n * n) { c[k] = -cost[k] } } else { for k in 0..<(n * n) { c[k] = cost[k] } }
        return solveMinimizing(c, n: n)
    }

    public static func solve(_ cost: [Double], n: Int, maximize: Bool) throws -> [Int] {
        try cost.withUnsafeBufferPointer { try solve($0, n: n, maximize: maximize) }
    }

    /// Sum of C[i, col[i]].
    public static func objective(_ cost: UnsafeBufferPointer<Double>, n: Int, _ col: [Int]) -> Double {
        var s = 0.0
        for i in 0..<n { s += cost[i * n + col[i]] }
        return s
    }

    private static func solveMinimizing(_ c: UnsafeMutablePointer<Double>, n: Int) -> [Int] {
        var u = [Double](repeating: 0, count: n)
        var v = [Double](repeating: 0, count: n)
        var col4row = [Int](repeating: -1, count: n)
        var row4col = [Int](repeating: -1, count: n)
        // Column reduction: v[j] = min_i C[i, j] keeps every reduced cost >= 0 with u = 0; a column
        // whose cheapest row is still free is matched to it at reduced cost 0.
        // (Scanned row by row: a column walk of a row-major matrix misses the cache every step.)
        var argmin = [Int](repeating: 0, count: n)
        for j in 0..<n { v[j] = c[j] }
        for i in 1..<max(1, n) {
            let row = c + i * n
            for j in 0..<n where row[j] < v[j] { v[j] = row[j]; argmin[j] = i }
        }
        for j in 0..<n where col4row[argmin[j]] == -1 { col4row[argmin[j]] = j; row4col[j] = argmin[j] }
        let spc = UnsafeMutablePointer<Double>.allocate(capacity: n)
        let path = UnsafeMutablePointer<Int>.allocate(capacity: n)
        let remaining = UnsafeMutablePointer<Int>.allocate(capacity: n)
        let scannedRow = UnsafeMutablePointer<Bool>.allocate(capacity: n)
        let scannedCol = UnsafeMutablePointer<Bool>.allocate(capacity: n)
        defer { spc.deallocate(); path.deallocate(); remaining.deallocate(); scannedRow.deallocate(); scannedCol.deallocate() }
        u.withUnsafeMutableBufferPointer { u in
        v.withUnsafeMutableBufferPointer { v in
        col4row.withUnsafeMutableBufferPointer { col4row in
        row4col.withUnsafeMutableBufferPointer { row4col in
            for freeRow in 0..<n where col4row[freeRow] == -1 {
                // Dijkstra from freeRow over the columns not yet scanned, until a free column.
                for j in 0..<n { spc[j] = .infinity; path[j] = -1; remaining[j] = j }
                for k in 0..<n { scannedRow[k] = false; scannedCol[k] = false }
                var numRemaining = n
                var minVal = 0.0
                var i = freeRow
                var sink = -1
                while sink == -1 {
                    scannedRow[i] = true
                    let row = c + i * n
                    let shift = minVal - u[i]
                    var lowest = Double.infinity
                    var index = -1
                    for it in 0..<numRemaining {
                        let j = remaining[it]
                        let r = row[j] - v[j] + shift
                        if r < spc[j] { path[j] = i; spc[j] = r }
                        let s = spc[j]
                        // On equal distance prefer a free column: it ends the search.
                        if s < lowest || (s == lowest && row4col[j] == -1 && row4col[remaining[index]] != -1) {
                            lowest = s; index = it
                        }
                    }
                    minVal = lowest
                    let j = remaining[index]
                    if row4col[j] == -1 { sink = j } else { i = row4col[j] }
                    scannedCol[j] = true
                    // Removed in place (not swapped with the last): the list stays ascending, so
                    // the scans above walk memory in order, which is faster than the copy.
                    numRemaining -= 1
                    (remaining + index).update(from: remaining + index + 1, count: numRemaining - index)
                }
                // Dual update keeps reduced costs >= 0 and tight on the matched pairs.
                u[freeRow] += minVal
                for r in 0..<n where scannedRow[r] && r != freeRow { u[r] += minVal - spc[col4row[r]] }
                for j in 0..<n where scannedCol[j] { v[j] -= minVal - spc[j] }
                // Flip the path.
                var j = sink
                while true {
                    let r = path[j]
                    row4col[j] = r
                    let prev = col4row[r]
                    col4row[r] = j
                    j = prev
                    if r == freeRow { break }
                }
            }
        }}}}
        return col4row
    }
}
