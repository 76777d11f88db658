import XCTest
@testable import Linalg

final class LinalgTests: XCTestCase {
    func random(_ r: Int, _ c: Int, seed: String) -> Matrix { gaussianMatrix(r, c, seed: 1, stream: seed) }
    func maxAbs(_ a: Matrix, _ b: Matrix) -> Float { maxAbsDifference(a, b) }

    func testGemmAgainstNaiveProduct() {
        let a = random(5, 7, seed: "a"), b = random(7, 3, seed: "b")
        let c = matmul(a, b)
        for i in 0..<5 { for j in 0..<3 {
            let ref = (0..<7).reduce(0.0) { $0 + Double(a[i, $1]) * Double(b[$1, j]) }
            XCTAssertEqual(Double(c[i, j]), ref, accuracy: 1e-5)
        } }
        XCTAssertLessThan(maxAbs(matmul(a, transA: true, a), matmul(a.transposed, a)), 1e-5)
    }

    func testSVDReconstructsWideAndTall() throws {
        for (m, n) in [(6, 9), (9, 6), (1, 4)] {
            let a = random(m, n, seed: "svd\(m)x\(n)")
            let (u, s, vt) = try svd(a)
            XCTAssertEqual(s, s.sorted(by: >))
            var us = u
            for i in 0..<u.rows { for j in 0..<u.cols { us[i, j] *= s[j] } }
            XCTAssertLessThan(maxAbs(matmul(us, vt), a), 1e-4)
            XCTAssertLessThan(maxAbs(matmul(u, transA: true, u), .identity(min(m, n))), 1e-5)
            for (x, y) in zip(try singularValues(a), s) { XCTAssertEqual(x, y, accuracy: 1e-5 * s[0]) }
        }
    }

    func testKnownSingularValues() throws {
        let a = Matrix(rows: 2, cols: 2, data: [3, 0, 4, 5])  // singular values sqrt(45), sqrt(5)
        let s = try singularValues(a)
        XCTAssertEqual(s[0], Float(45.0.squareRoot()), accuracy: 1e-5)
        XCTAssertEqual(s[1], Float(5.0.squareRoot()), accuracy: 1e-5)
    }

    func testSymmetricEigen() throws {
        let x = random(8, 5, seed: "eig")
        let a = matmul(x, transA: true, x)
        let (vals, vecs) = try symmetricEigen(a)
        XCTAssertEqual(vals, vals.sorted())
        for j in 0..<5 {  // A v = lambda v, v is column j
            for i in 0..<5 {
                let av = (0..<5).reduce(Float(0)) { $0 + a[i, $1] * vecs[$1, j] }
                XCTAssertEqual(av, vals[j] * vecs[i, j], accuracy: 1e-3)
            }
        }
    }

    func testOrthonormalBasisSpansTheColumns() throws {
        let a = random(10, 4, seed: "qr")
        let q = try orthonormalBasis(a)
        XCTAssertLessThan(maxAbs(matmul(q, transA: true, q), .identity(4)), 1e-5)
        let proj = matmul(q, matmul(q, transA: true, a))  // Q Q^T A == A
        XCTAssertLessThan(maxAbs(proj, a), 1e-4)
    }

    func testRNGIsSeededByNameAndSeedOnly() {
        var a = SeededRNG(seed: 42, stream: "model.layers.0.mlp.up_proj.weight")
        var b = SeededRNG(seed: 42, stream: "model.layers.0.mlp.up_proj.weight")
        var c = SeededRNG(seed: 42, stream: "model.layers.1.mlp.up_proj.weight")
        var d = SeededRNG(seed: 43, stream: "model.layers.0.mlp.up_proj.weight")
        let xa = (0..<8).map { _ in a.next() }
        XCTAssertEqual(xa, (0..<8).map { _ in b.next() })
        XCTAssertNotEqual(xa, (0..<8).map { _ in c.next() })
        XCTAssertNotEqual(xa, (0..<8).map { _ in d.next() })
        var g = SeededRNG(seed: 0, stream: "gauss")
        let xs = (0..<20000).map { _ in Double(g.nextGaussian()) }
        let mean = xs.reduce(0, +) / Double(xs.count)
        let varc = xs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(xs.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(varc, 1, accuracy: 0.05)
    }
}

final class TruncatedSVDTests: XCTestCase {
    /// A matrix with a known, decaying spectrum: σ_i = 1 / i.
    func decaying(_ m: Int, _ n: Int) throws -> Matrix {
        var g = SeededRNG(seed: 9, stream: "decay")
        let u = try orthonormalBasis(Matrix(rows: m, cols: n, data: (0..<(m * n)).map { _ in g.nextGaussian() }))
        let v = try orthonormalBasis(Matrix(rows: n, cols: n, data: (0..<(n * n)).map { _ in g.nextGaussian() }))
        var us = u
        for i in 0..<m { for j in 0..<n { us[i, j] *= 1 / Float(j + 1) } }
        return matmul(us, v, transB: true)
    }

    func testExactTruncationKeepsTheTopTripletsWithFixedSigns() throws {
        let a = try decaying(40, 24)
        let t = try TruncatedSVD(a, rank: 5)
        XCTAssertEqual(t.rank, 5)
        for (j, s) in t.s.enumerated() { XCTAssertEqual(s, 1 / Float(j + 1), accuracy: 1e-4) }
        for j in 0..<5 {  // the largest-|u| entry of each left vector is positive
            let col = (0..<40).map { t.u[$0, j] }
            XCTAssertGreaterThan(col.max(by: { abs($0) < abs($1) })!, 0)
        }
        let err = zip(t.reconstruct().data, a.data).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }.squareRoot()
        let optimum = (6...24).reduce(0.0) { $0 + 1 / Double($1 * $1) }.squareRoot()
        XCTAssertEqual(err, optimum, accuracy: 1e-4)
    }

    func testRandomizedMatchesExactOnADecayingSpectrum() throws {
        let a = try decaying(64, 48)
        var o = TruncatedSVD.Options()
        o.method = .randomized
        o.stream = "t"
        let r = try TruncatedSVD(a, rank: 6, options: o), e = try TruncatedSVD(a, rank: 6)
        for j in 0..<6 { XCTAssertEqual(r.s[j], e.s[j], accuracy: 1e-3 * e.s[0]) }
        XCTAssertEqual(try TruncatedSVD(a, rank: 6, options: o).u, r.u)  // same seed and stream, same bits
    }

    func testRankMeasures() {
        let s: [Float] = [4, 2, 1, 1, 0]
        XCTAssertEqual(Spectrum.numericalRank(s, rows: 5, cols: 5), 4)
        XCTAssertEqual(Spectrum.stableRank(s), 22.0 / 16, accuracy: 1e-12)
        XCTAssertEqual(Spectrum.energyRank(s, 0.9), 2)   // (16 + 4) / 22 = 0.909
        XCTAssertEqual(Spectrum.energyRank(s, 0.95), 3)
        XCTAssertEqual(Spectrum.effectiveRank([1, 1, 1, 1]), 4, accuracy: 1e-12)
    }
}
