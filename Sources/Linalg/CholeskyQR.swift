import COpenBLAS
import CLAPACKE

/// An orthonormal basis of the columns of a tall thin row-major m x l matrix Y by CholeskyQR2:
/// twice, G = YᵀY in f64, G = RᵀR, Y ← Y R⁻¹ (R⁻¹ rounded to f32, one sgemm). Every step is
/// level-3 BLAS, where Householder QR (`orthonormalBasis`) spends most of its time in level-2
/// panels: this is the basis of every power iteration of the randomized SVD. The f64 Gram matrix
/// keeps the first pass exact enough for cond(Y) up to about 1e5 (its result is then within
/// eps32·cond(Y) of orthonormal, which the second pass removes); above that (R's estimated
/// condition number, LAPACK dtrcon) or when Y is rank-deficient it returns Householder's basis,
/// which is orthonormal whatever Y is.
public func orthonormalBasisCholeskyQR2(_ y: Matrix) throws -> Matrix {
    precondition(y.rows >= y.cols, "orthonormalBasisCholeskyQR2: needs rows >= cols, got \(y.rows)x\(y.cols)")
    guard y.cols > 0 else { return Matrix(rows: y.rows, cols: 0) }
    guard let once = choleskyQRStep(y), let twice = choleskyQRStep(once) else { return try orthonormalBasis(y) }
    return twice
}

/// The largest condition number of R a CholeskyQR step accepts.
private let largestCondition = 1e5

/// One CholeskyQR step: Y R⁻¹, or nil when the Gram matrix is not safely positive definite.
private func choleskyQRStep(_ y: Matrix) -> Matrix? {
    let m = y.rows, l = y.cols
    let yd = y.data.map(Double.init)
    var g = [Double](repeating: 0, count: l * l)
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(l), Int32(m), 1, yd, Int32(l), 0, &g, Int32(l))
    // Row-major upper is column-major lower: Cholesky G = L Lᵀ gives R (upper, row-major) = Lᵀ.
    let colMajor = Int32(LAPACK_COL_MAJOR), lower = CChar(UInt8(ascii: "L")), nonUnit = CChar(UInt8(ascii: "N"))
    guard LAPACKE_dpotrf_work(colMajor, lower, Int32(l), &g, Int32(l)) == 0 else { return nil }
    var rcond = 0.0
    var work = [Double](repeating: 0, count: 3 * l), iwork = [Int32](repeating: 0, count: l)
    guard LAPACKE_dtrcon_work(colMajor, CChar(UInt8(ascii: "1")), lower, nonUnit, Int32(l), g, Int32(l), &rcond, &work, &iwork) == 0,
          rcond.isFinite, rcond * largestCondition >= 1 else { return nil }
    guard LAPACKE_dtrtri_work(colMajor, lower, nonUnit, Int32(l), &g, Int32(l)) == 0 else { return nil }
    var rInverse = Matrix(rows: l, cols: l)
    for i in 0..<l { for j in i..<l { rInverse[i, j] = Float(g[i * l + j]) } }
    return matmul(y, rInverse)
}
