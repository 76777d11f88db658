import CLowRank
import Linalg
import SafeTensors

/// The passes over a whole delta matrix that low-rank extraction makes besides its products:
/// FT - BASE decoded into one f32 buffer with its squared norm, and the residual of a rank-k
/// approximation measured block by block (the m x n approximation is never held).
enum LowRankDelta {
    /// Elements of BASE decoded at a time (a scratch that stays in cache).
    static let chunk = 1 << 16

    /// FT - BASE of one tensor, each difference rounded to f32 from f64 (exact for every float
    /// dtype), and Σ delta² in f64 (CLowRank's lanes, chunk by chunk, the chunks' sums added in
    /// order), `threads` workers sharing the chunks. The inputs' pages leave the resident set chunk
    /// by chunk. `buffers` lends the array (see `DeltaBuffers`); without it, a new one.
    static func decode(ft: Checkpoint, _ e: Checkpoint.Entry, base: Checkpoint, _ be: Checkpoint.Entry, threads: Int,
                       buffers: DeltaBuffers? = nil) -> (delta: [Float], normSq: Double) {
        let n = e.info.count
        ft.willNeed(e)
        base.willNeed(be)
        let fb = Raw(ft.bytes(e).baseAddress), bb = Raw(base.bytes(be).baseAddress)
        let fdtype = e.info.dtype, bdtype = be.info.dtype
        let fsize = fdtype.size!, bsize = bdtype.size!
        let bothBF16 = fdtype == .BF16 && bdtype == .BF16
        let chunks = (n + chunk - 1) / chunk
        let workers = BlockedProducts.workers(count: n, threads: threads, block: chunk)
        var sums = [Double](repeating: 0, count: chunks)
        var scratch = [Float](repeating: 0, count: workers * min(chunk, n))
        var delta = buffers?.take(n) ?? [Float](repeating: 0, count: n)
        delta.withUnsafeMutableBufferPointer { out in
            scratch.withUnsafeMutableBufferPointer { s in
                sums.withUnsafeMutableBufferPointer { sp in
                    let (o, s0, sums0) = (SendableMutablePointer(out.baseAddress), SendableMutablePointer(s.baseAddress), SendableMutablePointer(sp.baseAddress))
                    BlockedProducts.forEachBlock(count: n, threads: threads, block: chunk) { w, i, end in
                        let c = end - i, decodedBase = s0.p! + w * chunk
                        if bothBF16 {   // one pass instead of three (decode, decode, subtract)
                            sums0.p![i / chunk] = wt_delta_bf16_sumsq(fb.p! + i * 2, bb.p! + i * 2, o.p! + i, c)
                        } else {
                            Codec.decode(fdtype, fb.p! + i * fsize, count: c, into: o.p! + i)
                            Codec.decode(bdtype, bb.p! + i * bsize, count: c, into: decodedBase)
                            sums0.p![i / chunk] = wt_delta_sumsq(o.p! + i, decodedBase, c)
                        }
                        // Done with these input pages: out of the resident set as we go, so peak
                        // memory is the delta, not the delta and both inputs.
                        ft.release(e, bytes: i * fsize..<end * fsize)
                        base.release(be, bytes: i * bsize..<end * bsize)
                    }
                }
            }
        }
        ft.release(e)
        base.release(be)
        return (delta, sums.reduce(0, +))
    }

    /// Rows of the approximation formed at a time, per worker.
    static let rowsPerBlock = 16

    /// ‖A - B·C‖_F² in f64 for A m x n, B m x k, C k x n: in the own AVX-512 kernel where it runs
    /// (`BlockedProducts.residualSumOfSquares`); otherwise the approximation is formed with BLAS
    /// `rowsPerBlock` rows at a time, the blocks shared by `threads` workers, their sums added in
    /// block order (so the result does not depend on the thread count).
    static func residualSq(_ a: Matrix, _ b: Matrix, _ c: Matrix, threads: Int) -> Double {
        if let own = BlockedProducts.residualSumOfSquares(a, b, c, threads: threads) { return own }
        let m = a.rows, n = a.cols, k = b.cols
        precondition(b.rows == m && c.rows == k && c.cols == n, "residualSq: shapes")
        guard m > 0, n > 0 else { return 0 }
        let block = rowsPerBlock
        let blocks = (m + block - 1) / block
        let workers = BlockedProducts.workers(count: m, threads: threads, block: block)
        var sums = [Double](repeating: 0, count: blocks)
        var scratch = [Float](repeating: 0, count: workers * block * n)
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                c.data.withUnsafeBufferPointer { pc in
                    scratch.withUnsafeMutableBufferPointer { ps in
                        sums.withUnsafeMutableBufferPointer { pss in
                            let (a0, b0, c0) = (SendablePointer(pa.baseAddress), SendablePointer(pb.baseAddress), SendablePointer(pc.baseAddress))
                            let (s0, out) = (SendableMutablePointer(ps.baseAddress), SendableMutablePointer(pss.baseAddress))
                            BlockedProducts.forEachBlock(count: m, threads: threads, block: block) { w, r0, r1 in
                                let rows = r1 - r0, approx = s0.p! + w * block * n
                                if k > 0 {
                                    sgemm(transA: false, transB: false, m: rows, n: n, k: k, b0.p! + r0 * k, lda: k, c0.p!, ldb: n, into: approx)
                                } else {
                                    approx.update(repeating: 0, count: rows * n)
                                }
                                out.p![r0 / block] = wt_diff_sumsq(a0.p! + r0 * n, approx, rows * n)
                            }
                        }
                    }
                }
            }
        }
        return sums.reduce(0, +)
    }
}

/// Delta arrays handed from one matrix to the next within a job. A new array per matrix costs
/// a page fault and a zeroed page per 4 KiB (44,000 for a 4096 x 11008 delta) and an munmap when
/// it is freed: a tenth of a randomized extraction's CPU time. The pool holds at most as many
/// arrays as were in use at once, until the job ends.
final class DeltaBuffers: @unchecked Sendable {
    private let lock = Mutex()
    private var spare: [[Float]] = []

    /// An array of n floats, whose contents the caller overwrites: the largest returned one when
    /// it is large enough; otherwise that one is dropped and a new one made.
    func take(_ n: Int) -> [Float] {
        let largest: [Float]? = lock.withLock {
            guard let i = spare.indices.max(by: { spare[$0].capacity < spare[$1].capacity }) else { return nil }
            return spare.remove(at: i)
        }
        guard var b = largest, b.capacity >= n else { return [Float](repeating: 0, count: n) }
        if b.count > n {
            b.removeLast(b.count - n)   // keeps the capacity
        } else if b.count < n {
            b.append(contentsOf: repeatElement(0, count: n - b.count))
        }
        return b
    }

    /// Takes an array back once its matrix is done with.
    func give(_ b: [Float]) { lock.withLock { spare.append(b) } }
}

/// A tensor's mapped bytes handed to the workers that decode it.
private struct Raw: @unchecked Sendable {
    let p: UnsafeRawPointer?
    init(_ p: UnsafeRawPointer?) { self.p = p }
}
