import XCTest
import CLowRank
import Linalg
@testable import Surgery

/// CLowRank's passes against the Swift they replaced, AVX2 and portable paths alike.
final class LowRankKernelTests: XCTestCase {
    func values(_ n: Int, seed: String, scale: Float = 1) -> [Float] {
        var g = SeededRNG(seed: 5, stream: seed)
        return (0..<n).map { _ in g.nextGaussian() * scale }
    }

    func bothPaths(_ body: () -> Void) {
        defer { wt_lowrank_allow_avx2(1) }
        for allow: Int32 in [1, 0] { wt_lowrank_allow_avx2(allow); body() }
    }

    func testDeltaIsTheF64DifferenceRoundedAndItsSquaredNorm() {
        for n in [0, 3, 4, 1001] {
            let ft = values(n, seed: "f\(n)"), base = values(n, seed: "b\(n)", scale: 1e-3)
            let reference = zip(ft, base).map { Float(Double($0) - Double($1)) }
            let normSq = reference.reduce(0.0) { $0 + Double($1) * Double($1) }
            var got: [[Float]] = [], sums: [Double] = []
            bothPaths {
                var x = ft
                sums.append(wt_delta_sumsq(&x, base, n))
                got.append(x)
            }
            XCTAssertEqual(got[0], reference)
            XCTAssertEqual(got[1], reference)
            XCTAssertEqual(sums[0], sums[1])  // the same lanes on both paths
            XCTAssertEqual(sums[0], normSq, accuracy: 1e-12 * max(1, normSq))
        }
    }

    func testBF16DeltaInOnePassEqualsDecodingFirst() {
        for n in [0, 3, 4, 7, 8, 13, 1001] {
            // bf16 bytes of two arrays (the f32 values' upper halves), some equal entries
            let ft = values(n, seed: "bf\(n)"), base = values(n, seed: "bb\(n)", scale: 0.5)
            var fb = [UInt16](), bb = [UInt16]()
            for i in 0..<n {
                fb.append(UInt16(ft[i].bitPattern >> 16))
                bb.append(i % 5 == 0 ? fb[i] : UInt16(base[i].bitPattern >> 16))
            }
            let f32 = fb.map { Float(bitPattern: UInt32($0) << 16) }, b32 = bb.map { Float(bitPattern: UInt32($0) << 16) }
            var expected = f32
            let expectedSum = wt_delta_sumsq(&expected, b32, n)
            bothPaths {
                var out = [Float](repeating: .nan, count: n)
                let sum = wt_delta_bf16_sumsq(fb, bb, &out, n)
                XCTAssertEqual(out.map(\.bitPattern), expected.map(\.bitPattern), "n = \(n)")
                XCTAssertEqual(sum.bitPattern, expectedSum.bitPattern, "n = \(n)")
            }
        }
    }

    func testDifferenceSumOfSquares() {
        let a = values(1003, seed: "a"), b = values(1003, seed: "b")
        let reference = zip(a, b).reduce(0.0) { $0 + (Double($1.0) - Double($1.1)) * (Double($1.0) - Double($1.1)) }
        var sums: [Double] = []
        bothPaths { sums.append(wt_diff_sumsq(a, b, a.count)) }
        XCTAssertEqual(sums[0], sums[1])
        XCTAssertEqual(sums[0], reference, accuracy: 1e-12 * reference)
    }

    func testResidualOfAFactoredApproximation() {
        let m = 70, n = 45, k = 3
        let a = Matrix(rows: m, cols: n, data: values(m * n, seed: "A"))
        let b = Matrix(rows: m, cols: k, data: values(m * k, seed: "B")), c = Matrix(rows: k, cols: n, data: values(k * n, seed: "C"))
        let approx = matmul(b, c)
        let reference = zip(a.data, approx.data).reduce(0.0) { $0 + (Double($1.0) - Double($1.1)) * (Double($1.0) - Double($1.1)) }
        let one = LowRankDelta.residualSq(a, b, c, threads: 1)
        XCTAssertEqual(one, reference, accuracy: 1e-9 * reference)
        XCTAssertEqual(LowRankDelta.residualSq(a, b, c, threads: 3), one)  // block order, not worker order
        let none = LowRankDelta.residualSq(a, Matrix(rows: m, cols: 0), Matrix(rows: 0, cols: n), threads: 2)
        XCTAssertEqual(none, a.data.reduce(0.0) { $0 + Double($1) * Double($1) }, accuracy: 1e-9 * none)
    }

    func testDeltaBuffersLendTheSameStorageAndNewOnesWhenTooSmall() {
        let pool = DeltaBuffers()
        func address(_ a: [Float]) -> UnsafeRawPointer? { a.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress) } }
        // as the job does: the caller's reference dropped once the array is given back
        func giveBack(_ a: inout [Float]) { pool.give(a); a = [] }
        var a = pool.take(1000)
        XCTAssertEqual(a.count, 1000)
        let storage = address(a)
        giveBack(&a)
        a = pool.take(10)      // shrinks in place
        XCTAssertEqual(a.count, 10)
        XCTAssertEqual(address(a), storage)
        giveBack(&a)
        a = pool.take(1000)    // grows back within its capacity
        XCTAssertEqual(a.count, 1000)
        XCTAssertEqual(address(a), storage)
        giveBack(&a)
        var larger = pool.take(5000)   // beyond the capacity: a new array
        XCTAssertEqual(larger.count, 5000)
        var other = pool.take(3)       // nothing left to lend: a new array too
        XCTAssertEqual(other.count, 3)
        XCTAssertNotEqual(address(other), address(larger))
        // the largest one lent first, whatever the order they came back in
        let bigStorage = address(larger)
        giveBack(&larger)
        giveBack(&other)
        a = pool.take(2)
        XCTAssertEqual(address(a), bigStorage)
    }
}
