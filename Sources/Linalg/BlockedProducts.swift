import Dispatch

/// Products of one large matrix A (m x n, row-major) with thin panels (l columns), split into
/// blocks of fixed size that `threads` workers share. Each block is one single-threaded BLAS call
/// on the same operands whoever runs it, so the result does not depend on the thread count (BLAS
/// itself stays at one thread: see `BLASThreads`). This is how one large matrix keeps every core
/// busy when it is the only one left.
public enum BlockedProducts {
    /// Rows (of A for A·X, of the result for Aᵀ·Q) per block: measured on OpenBLAS 0.3.21, 1024
    /// runs as fast as one call over the whole matrix (smaller blocks repack the panel too often),
    /// and a 4096-row matrix still splits evenly between two workers.
    public static let block = 1024

    /// Y = A X (m x l), X n x l: blocks of A's rows, each a block of Y's rows.
    public static func times(_ a: Matrix, _ x: Matrix, threads: Int) -> Matrix {
        precondition(x.rows == a.cols, "BlockedProducts.times: \(a.rows)x\(a.cols) * \(x.rows)x\(x.cols)")
        let (m, n, l) = (a.rows, a.cols, x.cols)
        return blocked(a, x, resultRows: m, threads: threads) { pa, px, py, r0, r1 in
            sgemm(transA: false, transB: false, m: r1 - r0, n: l, k: n, pa + r0 * n, lda: n, px, ldb: l, into: py + r0 * l)
        }
    }

    /// Z = Aᵀ Q (n x l), Q m x l: blocks of A's columns, each a block of Z's rows.
    public static func transposedTimes(_ a: Matrix, _ q: Matrix, threads: Int) -> Matrix {
        precondition(q.rows == a.rows, "BlockedProducts.transposedTimes: (\(a.rows)x\(a.cols))ᵀ * \(q.rows)x\(q.cols)")
        let (m, n, l) = (a.rows, a.cols, q.cols)
        return blocked(a, q, resultRows: n, threads: threads) { pa, pq, pz, c0, c1 in
            sgemm(transA: true, transB: false, m: c1 - c0, n: l, k: m, pa + c0, lda: n, pq, ldb: l, into: pz + c0 * l)
        }
    }

    /// A result of `resultRows` x panel.cols whose blocks of rows `block(a, panel, result, start,
    /// end)` computes, shared by the workers.
    private static func blocked(_ a: Matrix, _ panel: Matrix, resultRows: Int, threads: Int,
                                _ block: @Sendable (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Int) -> Void) -> Matrix {
        var result = Matrix(rows: resultRows, cols: panel.cols)
        a.data.withUnsafeBufferPointer { pa in
            panel.data.withUnsafeBufferPointer { pp in
                result.data.withUnsafeMutableBufferPointer { pr in
                    let (a0, p0, r0) = (SendablePointer(pa.baseAddress), SendablePointer(pp.baseAddress), SendableMutablePointer(pr.baseAddress))
                    guard a0.p != nil, p0.p != nil, r0.p != nil else { return }   // an empty operand: nothing to compute
                    forEachBlock(count: resultRows, threads: threads) { _, start, end in block(a0.p!, p0.p!, r0.p!, start, end) }
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
