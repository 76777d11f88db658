import CPanel
import Dispatch

/// Products of one large matrix A (m x n, row-major) with thin panels (l columns), split into
/// blocks of fixed size that `threads` workers share. Each block is one single-threaded call on
/// the same operands whoever runs it, so the result does not depend on the thread count (BLAS
/// itself stays at one thread: see `BLASThreads`). This is how one large matrix keeps every core
/// busy when it is the only one left.
///
/// On CPUs with AVX-512 the blocks run wtool's own kernels (CPanel): each entry one chain of fused
/// multiply-adds in order, so the bits are the same on every such machine; they read A where it
/// lies instead of copying it into OpenBLAS's packed format on every call, and run thin panels
/// 15-30% faster than OpenBLAS 0.3.21 (measured on 4096 x 11008 with 74 columns). Elsewhere, BLAS.
public enum BlockedProducts {
    /// Rows (of A for A·X) or columns (of A for Qᵀ·A and Aᵀ·Q) per block: measured on OpenBLAS
    /// 0.3.21, 1024 runs as fast as one call over the whole matrix (smaller blocks repack the panel
    /// too often), and a 4096-row matrix still splits evenly between two workers. The own kernels
    /// want it too: a block of Qᵀ·A's result (l x 1024) stays in L2.
    public static let block = 1024

    /// Whether the blocks run the own AVX-512 kernels (false: BLAS).
    public static var ownKernels: Bool { wt_panel_available() != 0 }

    /// Y = A X (m x l), X n x l: blocks of A's rows, each a block of Y's rows.
    public static func times(_ a: Matrix, _ x: Matrix, threads: Int) -> Matrix {
        precondition(x.rows == a.cols, "BlockedProducts.times: \(a.rows)x\(a.cols) * \(x.rows)x\(x.cols)")
        let (m, n, l) = (a.rows, a.cols, x.cols)
        if ownKernels {
            return blocked(a, x, result: (m, l), count: m, threads: threads, scratch: wt_panel_scratch_floats(l)) { pa, px, py, r0, r1, scratch in
                wt_panel_times(pa + r0 * n, r1 - r0, n, n, px, l, l, py + r0 * l, l, scratch)
            }
        }
        return blocked(a, x, result: (m, l), count: m, threads: threads) { pa, px, py, r0, r1, _ in
            sgemm(transA: false, transB: false, m: r1 - r0, n: l, k: n, pa + r0 * n, lda: n, px, ldb: l, into: py + r0 * l)
        }
    }

    /// Z = Aᵀ Q (n x l), Q m x l: blocks of A's columns, each a block of Z's rows.
    public static func transposedTimes(_ a: Matrix, _ q: Matrix, threads: Int) -> Matrix {
        precondition(q.rows == a.rows, "BlockedProducts.transposedTimes: (\(a.rows)x\(a.cols))ᵀ * \(q.rows)x\(q.cols)")
        if ownKernels { return transposedPanelTimes(q, a, threads: threads).transposed }
        let (m, n, l) = (a.rows, a.cols, q.cols)
        return blocked(a, q, result: (n, l), count: n, threads: threads) { pa, pq, pz, c0, c1, _ in
            sgemm(transA: true, transB: false, m: c1 - c0, n: l, k: m, pa + c0, lda: n, pq, ldb: l, into: pz + c0 * l)
        }
    }

    /// Qᵀ A (l x n), Q m x l: blocks of A's columns, each a block of the result's columns. The
    /// transpose of `transposedTimes`, for callers that want the panel's rows (the projection B =
    /// QᵀA of the randomized SVD).
    public static func transposedPanelTimes(_ q: Matrix, _ a: Matrix, threads: Int) -> Matrix {
        precondition(q.rows == a.rows, "BlockedProducts.transposedPanelTimes: (\(q.rows)x\(q.cols))ᵀ * \(a.rows)x\(a.cols)")
        guard ownKernels else { return transposedTimes(a, q, threads: threads).transposed }
        let (m, n, l) = (a.rows, a.cols, q.cols)
        return blocked(a, q, result: (l, n), count: n, threads: threads, scratch: wt_panel_scratch_floats(l)) { pa, pq, pz, c0, c1, scratch in
            wt_panel_transposed_times(pa + c0, m, c1 - c0, n, pq, l, l, pz + c0, n, scratch)
        }
    }

    /// C (m x n) = op(A) op(B) with BLAS, C's rows cut into blocks of `block` that `threads`
    /// workers share, each block one single-threaded call. OpenBLAS's own threads would not do:
    /// its result depends on how it splits the rows (measured on 0.3.21's Zen kernels: a 128 x
    /// 128 product differs in the last bits between 1 and 2 threads, and between one call and
    /// two calls of half the rows each), so the blocks are fixed and only who runs them varies.
    public static func gemmRowBlocks(transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
                                     _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
                                     into c: UnsafeMutablePointer<Float>, threads: Int, block: Int = block) {
        let (a0, b0, c0) = (SendablePointer(a), SendablePointer(b), SendableMutablePointer(c))
        forEachBlock(count: m, threads: threads, block: block) { _, r0, r1 in
            // Row r of op(A) starts at row r of A, or at column r when A is transposed.
            let rows = transA ? a0.p! + r0 : a0.p! + r0 * lda
            sgemm(transA: transA, transB: transB, m: r1 - r0, n: n, k: k, rows, lda: lda, b0.p!, ldb: ldb, into: c0.p! + r0 * n)
        }
    }

    /// Rows of A per block of `residualSumOfSquares`: the block of C the kernel copies (k x 80
    /// per 80 columns) is used by this many rows.
    public static let residualBlock = 256

    /// ‖A - B·C‖_F² for A m x n, B m x k, C k x n, in the own kernels: the product is formed tile by
    /// tile in registers (never held), each entry compared with A's in f64; blocks of rows shared
    /// by the workers, their sums added in block order (so the result does not depend on the
    /// thread count). nil where the own kernels do not run (the caller forms B·C with BLAS).
    public static func residualSumOfSquares(_ a: Matrix, _ b: Matrix, _ c: Matrix, threads: Int) -> Double? {
        guard ownKernels else { return nil }
        let (m, n, k) = (a.rows, a.cols, b.cols)
        precondition(b.rows == m && c.rows == k && c.cols == n, "BlockedProducts.residualSumOfSquares: shapes")
        guard m > 0, n > 0 else { return 0 }
        let blocks = (m + residualBlock - 1) / residualBlock
        var sums = [Double](repeating: 0, count: blocks)
        let floats = wt_panel_residual_scratch_floats(k)
        let workers = workers(count: m, threads: threads, block: residualBlock)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: workers * floats * 4, alignment: 64).bindMemory(to: Float.self, capacity: workers * floats)
        defer { scratch.deallocate() }
        let s0 = SendableMutablePointer(scratch)
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                c.data.withUnsafeBufferPointer { pc in
                    sums.withUnsafeMutableBufferPointer { ps in
                        // B and C are empty when k = 0 (nil bases): the kernel never reads them then
                        let (a0, b0, c0, out) = (SendablePointer(pa.baseAddress), SendablePointer(pb.baseAddress), SendablePointer(pc.baseAddress), SendableMutablePointer(ps.baseAddress))
                        forEachBlock(count: m, threads: threads, block: residualBlock) { w, r0, r1 in
                            out.p![r0 / residualBlock] = wt_panel_residual_sumsq(a0.p! + r0 * n, r1 - r0, n, n, b0.p.map { $0 + r0 * k }, k, k,
                                                                                 c0.p, n, s0.p! + w * floats)
                        }
                    }
                }
            }
        }
        return sums.reduce(0, +)
    }

    /// A result of result.rows x result.cols whose blocks `block(a, panel, result, start, end,
    /// scratch)` computes, `count` split into blocks shared by the workers; each worker gets its
    /// own `scratch` floats (64-byte aligned; nil when none is asked for).
    private static func blocked(_ a: Matrix, _ panel: Matrix, result shape: (rows: Int, cols: Int), count: Int, threads: Int, scratch floats: Int = 0,
                                _ block: @Sendable (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Int, UnsafeMutablePointer<Float>?) -> Void) -> Matrix {
        var result = Matrix(rows: shape.rows, cols: shape.cols)
        let workers = workers(count: count, threads: threads)
        let stride = (floats + 15) / 16 * 16
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(1, workers * stride) * 4, alignment: 64).bindMemory(to: Float.self, capacity: max(1, workers * stride))
        defer { scratch.deallocate() }
        let s0 = SendableMutablePointer(scratch)
        a.data.withUnsafeBufferPointer { pa in
            panel.data.withUnsafeBufferPointer { pp in
                result.data.withUnsafeMutableBufferPointer { pr in
                    let (a0, p0, r0) = (SendablePointer(pa.baseAddress), SendablePointer(pp.baseAddress), SendableMutablePointer(pr.baseAddress))
                    guard a0.p != nil, p0.p != nil, r0.p != nil else { return }   // an empty operand: nothing to compute
                    forEachBlock(count: count, threads: threads) { w, start, end in
                        block(a0.p!, p0.p!, r0.p!, start, end, floats > 0 ? s0.p! + w * stride : nil)
                    }
                }
            }
        }
        return result
    }

    /// Workers `forEachBlock` runs (scratch per worker is indexed by them).
    public static func workers(count: Int, threads: Int, block: Int = block) -> Int {
        max(1, min(threads, (count + block - 1) / block))
    }

    /// Runs body(worker, start, end) over [0, count) in blocks of `block`, block b on worker
    /// b % workers.
    public static func forEachBlock(count: Int, threads: Int, block: Int = block, _ body: @Sendable (Int, Int, Int) -> Void) {
        let blocks = (count + block - 1) / block
        let workers = workers(count: count, threads: threads, block: block)
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            var b = w
            while b < blocks {
                body(w, b * block, min(count, (b + 1) * block))
                b += workers
            }
        }
    }
}

/// Raw pointers handed to the workers of one blocked pass (each worker writes its own blocks).
public struct SendablePointer<T>: @unchecked Sendable {
    public let p: UnsafePointer<T>?
    public init(_ p: UnsafePointer<T>?) { self.p = p }
}
public struct SendableMutablePointer<T>: @unchecked Sendable {
    public let p: UnsafeMutablePointer<T>?
    public init(_ p: UnsafeMutablePointer<T>?) { self.p = p }
}
