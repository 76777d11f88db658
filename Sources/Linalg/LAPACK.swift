import CLAPACKE

// Row-major data is passed to LAPACK as the column-major transpose (no copies): a row-major
// m x n matrix is a column-major n x m one. Workspaces are sized by a query rounded up
// (`nextUp` + slack: LAPACK 3.11 returns the size as a float that can round down above 2^24)
// or by the documented formula, through the `_work` entry points: Debian's OpenBLAS 0.3.21
// `LAPACKE_ssyevd` under-sizes its own workspace for n >= 4096.

private let colMajor = Int32(LAPACK_COL_MAJOR)
private func ch(_ c: Character) -> CChar { CChar(c.asciiValue!) }
private func lwork(_ q: Float) -> Int { Int(q.nextUp) + 64 }

/// Thin SVD A = U diag(S) Vt of a row-major m x n matrix (k = min(m, n)), by divide and conquer
/// (`sgesdd`). U is m x k, Vt is k x n, S descending.
public func svd(_ a: Matrix) throws -> (u: Matrix, s: [Float], vt: Matrix) {
    let m = a.rows, n = a.cols, k = min(m, n)
    guard k > 0 else { return (Matrix(rows: m, cols: 0), [], Matrix(rows: 0, cols: n)) }
    var work = a.data
    var s = [Float](repeating: 0, count: k)
    // LAPACK sees A^T (n x m) = U' S V'^T, so our Vt is U'^T (U' col-major n x k == row-major k x n)
    // and our U is V' (V'^T col-major k x m == row-major m x k).
    var vt = [Float](repeating: 0, count: k * n)
    var u = [Float](repeating: 0, count: m * k)
    var iwork = [Int32](repeating: 0, count: 8 * k)
    var q: Float = 0
    var info = LAPACKE_sgesdd_work(colMajor, ch("S"), Int32(n), Int32(m), &work, Int32(n), &s, &vt, Int32(n),
                                   &u, Int32(k), &q, -1, &iwork)
    guard info == 0 else { throw LinalgError(routine: "sgesdd", info: info) }
    var ws = [Float](repeating: 0, count: lwork(q))
    info = LAPACKE_sgesdd_work(colMajor, ch("S"), Int32(n), Int32(m), &work, Int32(n), &s, &vt, Int32(n),
                               &u, Int32(k), &ws, Int32(ws.count), &iwork)
    guard info == 0 else { throw LinalgError(routine: "sgesdd", info: info) }
    return (Matrix(rows: m, cols: k, data: u), s, Matrix(rows: k, cols: n, data: vt))
}

/// Singular values only (descending).
public func singularValues(_ a: Matrix) throws -> [Float] {
    let m = a.rows, n = a.cols, k = min(m, n)
    guard k > 0 else { return [] }
    var work = a.data
    var s = [Float](repeating: 0, count: k)
    var iwork = [Int32](repeating: 0, count: 8 * k)
    var q: Float = 0
    var du: Float = 0, dv: Float = 0
    var info = LAPACKE_sgesdd_work(colMajor, ch("N"), Int32(n), Int32(m), &work, Int32(n), &s, &du, 1, &dv, 1, &q, -1, &iwork)
    guard info == 0 else { throw LinalgError(routine: "sgesdd", info: info) }
    var ws = [Float](repeating: 0, count: lwork(q))
    info = LAPACKE_sgesdd_work(colMajor, ch("N"), Int32(n), Int32(m), &work, Int32(n), &s, &du, 1, &dv, 1, &ws, Int32(ws.count), &iwork)
    guard info == 0 else { throw LinalgError(routine: "sgesdd", info: info) }
    return s
}

/// Eigen-decomposition of a symmetric n x n matrix (`ssyevd`): eigenvalues ascending, and the
/// eigenvectors as the columns of `vectors` (row-major n x n).
public func symmetricEigen(_ a: Matrix) throws -> (values: [Float], vectors: Matrix) {
    precondition(a.rows == a.cols, "symmetricEigen: \(a.rows)x\(a.cols) is not square")
    let n = a.rows
    guard n > 0 else { return ([], Matrix(rows: 0, cols: 0)) }
    var w = a.data  // symmetric: row-major == column-major
    var vals = [Float](repeating: 0, count: n)
    // Documented sizes for JOBZ='V': LWORK >= 1 + 6n + 2n^2, LIWORK >= 3 + 5n.
    var ws = [Float](repeating: 0, count: 1 + 6 * n + 2 * n * n)
    var iw = [Int32](repeating: 0, count: 3 + 5 * n)
    let info = LAPACKE_ssyevd_work(colMajor, ch("V"), ch("U"), Int32(n), &w, Int32(n), &vals, &ws, Int32(ws.count), &iw, Int32(iw.count))
    guard info == 0 else { throw LinalgError(routine: "ssyevd", info: info) }
    // Column-major output: eigenvector j is contiguous; as row-major that is row j, so transpose.
    return (vals, Matrix(rows: n, cols: n, data: w).transposed)
}

/// Orthonormal basis Q (m x n, m >= n) of the columns of a row-major m x n matrix.
/// Row-major A is column-major A^T; the LQ factorisation A^T = L Q' gives A = Q'^T L^T, and Q'
/// (column-major n x m) read row-major is exactly Q'^T: the Q of A's QR, without a transpose.
public func orthonormalBasis(_ a: Matrix) throws -> Matrix {
    let m = a.rows, n = a.cols
    precondition(m >= n, "orthonormalBasis: needs rows >= cols, got \(m)x\(n)")
    guard n > 0 else { return Matrix(rows: m, cols: 0) }
    var w = a.data
    var tau = [Float](repeating: 0, count: n)
    var q: Float = 0
    var info = LAPACKE_sgelqf_work(colMajor, Int32(n), Int32(m), &w, Int32(n), &tau, &q, -1)
    guard info == 0 else { throw LinalgError(routine: "sgelqf", info: info) }
    var ws = [Float](repeating: 0, count: lwork(q))
    info = LAPACKE_sgelqf_work(colMajor, Int32(n), Int32(m), &w, Int32(n), &tau, &ws, Int32(ws.count))
    guard info == 0 else { throw LinalgError(routine: "sgelqf", info: info) }
    info = LAPACKE_sorglq_work(colMajor, Int32(n), Int32(m), Int32(n), &w, Int32(n), &tau, &q, -1)
    guard info == 0 else { throw LinalgError(routine: "sorglq", info: info) }
    ws = [Float](repeating: 0, count: lwork(q))
    info = LAPACKE_sorglq_work(colMajor, Int32(n), Int32(m), Int32(n), &w, Int32(n), &tau, &ws, Int32(ws.count))
    guard info == 0 else { throw LinalgError(routine: "sorglq", info: info) }
    return Matrix(rows: m, cols: n, data: w)
}
