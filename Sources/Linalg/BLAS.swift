import COpenBLAS

/// BLAS threading. OpenBLAS's pool is process-global: set it once before parallel work. wtool
/// parallelises across tensors, so kernels called from several workers run with 1 BLAS thread
/// (2 levels of threads oversubscribe the cores and run slower, measured).
public enum BLASThreads {
    public static func set(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }
    public static var current: Int { Int(openblas_get_num_threads()) }
}

/// C = alpha * op(A) * op(B) + beta * C, all row-major.
public func gemm(_ a: Matrix, transA: Bool = false, _ b: Matrix, transB: Bool = false,
                 alpha: Float = 1, beta: Float = 0, into c: inout Matrix) {
    let m = transA ? a.cols : a.rows
    let k = transA ? a.rows : a.cols
    let kb = transB ? b.cols : b.rows
    let n = transB ? b.rows : b.cols
    precondition(k == kb && c.rows == m && c.cols == n, "gemm: shapes \(m)x\(k) * \(kb)x\(n) -> \(c.rows)x\(c.cols)")
    guard m > 0 && n > 0 else { return }
    if k == 0 {  // BLAS leaves C untouched for k = 0 only if beta handles it; be explicit
        for i in c.data.indices { c.data[i] *= beta }
        return
    }
    a.data.withUnsafeBufferPointer { pa in
        b.data.withUnsafeBufferPointer { pb in
            c.data.withUnsafeMutableBufferPointer { pc in
                cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                            Int32(m), Int32(n), Int32(k), alpha, pa.baseAddress, Int32(a.cols),
                            pb.baseAddress, Int32(b.cols), beta, pc.baseAddress, Int32(n))
            }
        }
    }
}

/// op(A) * op(B) as a new matrix.
public func matmul(_ a: Matrix, transA: Bool = false, _ b: Matrix, transB: Bool = false) -> Matrix {
    var c = Matrix(rows: transA ? a.cols : a.rows, cols: transB ? b.rows : b.cols)
    gemm(a, transA: transA, b, transB: transB, into: &c)
    return c
}

/// C (m x n, row-major) = op(A) * op(B) + beta * C on raw row-major buffers (leading dimensions
/// are the stored row lengths): for callers whose operands are views into larger buffers.
public func sgemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                  _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                  beta: Float = 0, into c: UnsafeMutablePointer<Float>) {
    guard m > 0 && n > 0 else { return }
    if k == 0 {
        for i in 0..<(m * n) { c[i] *= beta }
        return
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(n))
}
