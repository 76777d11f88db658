import XCTest
@testable import Linalg

/// The pieces of the large-matrix SVD path: blocked products, CholeskyQR2, and the iterative exact
/// method, each against a plain reference (one BLAS call, Householder QR, gesdd).
final class BlockedSVDTests: XCTestCase {
    func random(_ r: Int, _ c: Int, seed: String) -> Matrix { gaussianMatrix(r, c, seed: 3, stream: seed) }
    func maxAbs(_ a: Matrix, _ b: Matrix) -> Float { maxAbsDifference(a, b) }

    /// m x n with singular values 1/(j+1) (j < n) and random singular vectors.
    func decaying(_ m: Int, _ n: Int) throws -> Matrix {
        let u = try orthonormalBasis(random(m, n, seed: "u"))
        let v = try orthonormalBasis(random(n, n, seed: "v"))
        var us = u
        for i in 0..<m { for j in 0..<n { us[i, j] *= 1 / Float(j + 1) } }
        return matmul(us, v, transB: true)
    }

    func testBlockedProductsEqualOneProductAndIgnoreTheThreadCount() {
        // more rows and columns than one block, and a ragged last block
        let a = random(2 * BlockedProducts.block + 37, BlockedProducts.block + 5, seed: "a")
        let x = random(a.cols, 7, seed: "x"), q = random(a.rows, 7, seed: "q")
        let y1 = BlockedProducts.times(a, x, threads: 1), z1 = BlockedProducts.transposedTimes(a, q, threads: 1)
        XCTAssertLessThan(maxAbs(y1, matmul(a, x)), 1e-3)
        XCTAssertLessThan(maxAbs(z1, matmul(a, transA: true, q)), 1e-3)
        for threads in [2, 3, 8] {
            XCTAssertEqual(BlockedProducts.times(a, x, threads: threads), y1)
            XCTAssertEqual(BlockedProducts.transposedTimes(a, q, threads: threads), z1)
        }
    }

    func testRowBlockProductsEqualOneProductAndIgnoreTheThreadCount() {
        // Blocks of 48 rows over 150 (a ragged last block), both layouts of A. (OpenBLAS's own
        // threads are what this replaces; in this test process they happened to give equal bits,
        // so the interop test of permute-match's report for 1 and 2 threads is the one that
        // caught them, on Zen.)
        let (n, k) = (150, 130)
        for transA in [false, true] {
            let a = random(transA ? k : n, transA ? n : k, seed: "a"), b = random(n, k, seed: "b")
            let reference = matmul(a, transA: transA, b, transB: true)
            var results: [[Float]] = []
            for threads in [1, 2, 3] {
                var c = [Float](repeating: .nan, count: n * n)
                a.data.withUnsafeBufferPointer { pa in
                    b.data.withUnsafeBufferPointer { pb in
                        c.withUnsafeMutableBufferPointer { pc in
                            BlockedProducts.gemmRowBlocks(transA: transA, transB: true, m: n, n: n, k: k, pa.baseAddress!, lda: a.cols,
                                                          pb.baseAddress!, ldb: k, into: pc.baseAddress!, threads: threads, block: 48)
                        }
                    }
                }
                results.append(c)
            }
            XCTAssertLessThan(maxAbs(Matrix(rows: n, cols: n, data: results[0]), reference), 1e-4)
            XCTAssertEqual(results[1], results[0])
            XCTAssertEqual(results[2], results[0])
        }
    }

    func testCholeskyQR2IsOrthonormalAndSpansTheColumns() throws {
        var y = random(300, 12, seed: "y")
        for i in 0..<300 { y[i, 3] = 1e-3 * y[i, 3] + y[i, 4] }  // ill-conditioned but full rank
        let q = try orthonormalBasisCholeskyQR2(y)
        XCTAssertLessThan(maxAbs(matmul(q, transA: true, q), .identity(12)), 2e-6)
        let projected = matmul(q, matmul(q, transA: true, y))  // Q Qᵀ Y = Y
        XCTAssertLessThan(maxAbs(projected, y), 1e-4)
    }

    func testCholeskyQR2FallsBackOnRankDeficientColumns() throws {
        var y = random(100, 6, seed: "d")
        for i in 0..<100 { y[i, 5] = y[i, 2] }  // rank 5: the Gram matrix is singular
        let q = try orthonormalBasisCholeskyQR2(y)
        XCTAssertEqual(q, try orthonormalBasis(y))  // Householder's basis, bit for bit
        XCTAssertLessThan(maxAbs(matmul(q, transA: true, q), .identity(6)), 1e-5)
    }

    func options(iterative: Bool, threads: Int = 1, maxIterations: Int = 60) -> TruncatedSVD.Options {
        var o = TruncatedSVD.Options()
        o.iterative = iterative
        o.stream = "w"
        o.threads = threads
        o.maxIterations = maxIterations
        return o
    }

    func testIterativeExactMatchesGesdd() throws {
        let a = try decaying(320, 200)
        let k = 8
        let it = try TruncatedSVD(a, rank: k, options: options(iterative: true))
        let ref = try TruncatedSVD(a, rank: k)
        XCTAssertNotNil(it.iterations)
        XCTAssertLessThanOrEqual(it.residual!, 1e-4)
        XCTAssertNil(ref.iterations)
        for j in 0..<k {
            XCTAssertEqual(it.s[j], ref.s[j], accuracy: 1e-5 * ref.s[0])
            // the same singular vectors, signs included (svd_flip)
            let dot = (0..<a.rows).reduce(0.0) { $0 + Double(it.u[$1, j]) * Double(ref.u[$1, j]) }
            XCTAssertEqual(dot, 1, accuracy: 1e-4)
        }
        XCTAssertLessThan(maxAbs(it.reconstruct(), ref.reconstruct()), 1e-4)
        for threads in [2, 5] {  // same bits whatever the workers
            let t = try TruncatedSVD(a, rank: k, options: options(iterative: true, threads: threads))
            XCTAssertEqual(t.u, it.u)
            XCTAssertEqual(t.vt, it.vt)
            XCTAssertEqual(t.s, it.s)
        }
    }

    func testIterativeExactHandsOverToGesddWhenItDoesNotConverge() throws {
        // a Gaussian matrix: no gap after the rank, so one iteration is far from converged
        let a = random(200, 150, seed: "flat")
        let t = try TruncatedSVD(a, rank: 6, options: options(iterative: true, maxIterations: 1))
        XCTAssertNil(t.iterations)
        let ref = try TruncatedSVD(a, rank: 6)
        XCTAssertEqual(t.u, ref.u)
        XCTAssertEqual(t.s, ref.s)
    }

    func testRandomizedIgnoresTheThreadCount() throws {
        let a = try decaying(1100, 300)
        var o = options(iterative: false)
        o.method = .randomized
        let one = try TruncatedSVD(a, rank: 10, options: o)
        o.threads = 3
        let three = try TruncatedSVD(a, rank: 10, options: o)
        XCTAssertEqual(one.u, three.u)
        XCTAssertEqual(one.vt, three.vt)
        let ref = try TruncatedSVD(a, rank: 10)
        for j in 0..<10 { XCTAssertEqual(one.s[j], ref.s[j], accuracy: 1e-3 * ref.s[0]) }
    }
}
