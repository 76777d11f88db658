import CPanel
import XCTest
@testable import Linalg

/// The own AVX-512 thin-panel kernels (CPanel) behind `BlockedProducts`: every entry is the chain
/// of fused multiply-adds the header promises, bit for bit, on shapes whose every edge is ragged
/// (rows not a multiple of the 4-row tile, panels wider than one 80-column group and not a
/// multiple of 16, columns not a multiple of the 64-column strip, more rows than one 96-row strip,
/// a shared dimension longer than one block of the panel); and the BLAS path that machines
/// without AVX-512 take agrees with them to rounding.
final class PanelKernelTests: XCTestCase {
    func random(_ r: Int, _ c: Int, _ stream: String) -> Matrix { gaussianMatrix(r, c, seed: 11, stream: stream) }

    /// (A X)[i][j] as the kernels promise: fmaf(a[i][k], x[k][j], c) for k in order, from zero.
    func chainTimes(_ a: Matrix, _ x: Matrix) -> Matrix {
        var y = Matrix(rows: a.rows, cols: x.cols)
        for i in 0..<a.rows {
            for j in 0..<x.cols {
                var c: Float = 0
                for k in 0..<a.cols { c = c.addingProduct(a.data[i * a.cols + k], x.data[k * x.cols + j]) }
                y.data[i * x.cols + j] = c
            }
        }
        return y
    }

    /// (Qᵀ A)[t][j]: fmaf(q[i][t], a[i][j], c) for i in order, from zero: the chain of Qᵀ times A.
    func chainTransposedTimes(_ q: Matrix, _ a: Matrix) -> Matrix { chainTimes(q.transposed, a) }

    func requireKernels() throws {
        try XCTSkipUnless(BlockedProducts.ownKernels, "this CPU has no AVX-512: the products run in BLAS (tested by the other cases)")
    }

    func testTimesIsTheFusedChainOfEveryEntry() throws {
        try requireKernels()
        // 85 columns: an 80-column group and a 5-column one; 1100 > the 512 rows of x a block holds
        // at that width, so tiles are stored and reloaded between blocks
        let a = random(203, 1100, "a"), x = random(1100, 85, "x")
        let y = BlockedProducts.times(a, x, threads: 2)
        XCTAssertEqual(y, chainTimes(a, x))
        // a narrow panel: 3072 rows of x a block, so 3200 takes two
        let a2 = random(37, 3200, "a2"), x2 = random(3200, 7, "x2")
        XCTAssertEqual(BlockedProducts.times(a2, x2, threads: 1), chainTimes(a2, x2))
        // one column, one row
        let a3 = random(1, 19, "a3"), x3 = random(19, 1, "x3")
        XCTAssertEqual(BlockedProducts.times(a3, x3, threads: 1), chainTimes(a3, x3))
    }

    func testTransposedProductsAreTheFusedChainOfEveryEntry() throws {
        try requireKernels()
        // 1100 columns: two blocks of 1024 and 76 columns, the last strip 12 wide; 203 rows: three
        // strips of rows; 13 panel columns: tiles of 6, 6 and 1
        let a = random(203, 1100, "a"), q = random(203, 13, "q")
        let expected = chainTransposedTimes(q, a)
        XCTAssertEqual(BlockedProducts.transposedPanelTimes(q, a, threads: 2), expected)
        XCTAssertEqual(BlockedProducts.transposedTimes(a, q, threads: 3), expected.transposed)
        let a2 = random(5, 70, "a2"), q2 = random(5, 74, "q2")
        XCTAssertEqual(BlockedProducts.transposedPanelTimes(q2, a2, threads: 1), chainTransposedTimes(q2, a2))
    }

    func testResidualIsTheSumOfSquaresAgainstTheChainedProduct() throws {
        try requireKernels()
        // 300 rows: a block of 256 and one of 44 (tiles of 4 rows, the last 4 + 0); 1013 columns:
        // groups of 80, the last 53 wide
        let a = random(300, 1013, "a"), b = random(300, 7, "b"), c = random(7, 1013, "c")
        let p = chainTimes(b, c)
        var expected = 0.0
        for i in 0..<a.data.count { let d = Double(a.data[i]) - Double(p.data[i]); expected += d * d }
        let got = try XCTUnwrap(BlockedProducts.residualSumOfSquares(a, b, c, threads: 1))
        XCTAssertEqual(got, expected, accuracy: 1e-12 * expected)   // only the f64 adds' order differs
        for threads in [2, 3] { XCTAssertEqual(BlockedProducts.residualSumOfSquares(a, b, c, threads: threads), got) }
        // rank 0: the sum of A's squares
        let none = try XCTUnwrap(BlockedProducts.residualSumOfSquares(a, Matrix(rows: 300, cols: 0), Matrix(rows: 0, cols: 1013), threads: 2))
        XCTAssertEqual(none, a.data.reduce(0.0) { $0 + Double($1) * Double($1) }, accuracy: 1e-12 * none)
        wt_panel_allow(0)
        defer { wt_panel_allow(1) }
        XCTAssertNil(BlockedProducts.residualSumOfSquares(a, b, c, threads: 1))
    }

    func testBLASPathAgreesAndEmptyOperandsGiveZeros() throws {
        let a = random(150, 1030, "a"), x = random(1030, 21, "x"), q = random(150, 21, "q")
        let own = BlockedProducts.ownKernels
        let y = BlockedProducts.times(a, x, threads: 2), zt = BlockedProducts.transposedPanelTimes(q, a, threads: 2)
        wt_panel_allow(0)
        defer { wt_panel_allow(1) }
        XCTAssertFalse(BlockedProducts.ownKernels)
        let yb = BlockedProducts.times(a, x, threads: 2), ztb = BlockedProducts.transposedPanelTimes(q, a, threads: 2)
        XCTAssertLessThan(maxAbsDifference(y, yb), 1e-3)
        XCTAssertLessThan(maxAbsDifference(zt, ztb), 1e-3)
        XCTAssertLessThan(maxAbsDifference(BlockedProducts.transposedTimes(a, q, threads: 2), ztb.transposed), 1e-3)
        for threads in [1, 3] {   // BLAS's blocks are thread-independent too
            XCTAssertEqual(BlockedProducts.times(a, x, threads: threads), yb)
            XCTAssertEqual(BlockedProducts.transposedPanelTimes(q, a, threads: threads), ztb)
        }
        wt_panel_allow(1)
        XCTAssertEqual(BlockedProducts.ownKernels, own)
        // a shared dimension of zero: chains of nothing
        let empty = Matrix(rows: 4, cols: 0), none = Matrix(rows: 0, cols: 3)
        XCTAssertEqual(BlockedProducts.times(empty, none, threads: 2), Matrix(rows: 4, cols: 3))
        XCTAssertEqual(BlockedProducts.transposedPanelTimes(Matrix(rows: 0, cols: 3), Matrix(rows: 0, cols: 5), threads: 2), Matrix(rows: 3, cols: 5))
    }
}
