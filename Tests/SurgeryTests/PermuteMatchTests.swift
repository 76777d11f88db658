import XCTest
@testable import Surgery
import SafeTensors
import Linalg
import CAssign

final class PermuteMatchTests: XCTestCase {
    /// Brute force over all permutations of a small matrix.
    private func bruteForceMax(_ c: [Double], _ n: Int) -> Double {
        var best = -Double.infinity
        var p = Array(0..<n)
        func rec(_ k: Int) {
            if k == n { best = max(best, (0..<n).reduce(0) { $0 + c[$1 * n + p[$1]] }); return }
            for i in k..<n { p.swapAt(k, i); rec(k + 1); p.swapAt(k, i) }
        }
        rec(0)
        return best
    }

    func testLAPIsExactAgainstBruteForce() throws {
        var rng = SeededRNG(seed: 1, stream: "lap")
        for trial in 0..<300 {
            let n = 1 + trial % 7
            let c: [Double] = (0..<(n * n)).map { _ in trial % 3 == 0 ? Double(rng.next() % 3) : rng.nextUnitDouble() - 0.5 }
            let col = try LinearAssignment.solve(c, n: n, maximize: true)
            XCTAssertEqual(Set(col), Set(0..<n))
            let got = c.withUnsafeBufferPointer { LinearAssignment.objective($0, n: n, col) }
            XCTAssertEqual(got, bruteForceMax(c, n), accuracy: 1e-12, "trial \(trial)")
            let minCol = try LinearAssignment.solve(c.map { -$0 }, n: n, maximize: false)
            XCTAssertEqual(c.withUnsafeBufferPointer { LinearAssignment.objective($0, n: n, minCol) }, got, accuracy: 1e-12)
        }
    }

    /// The AVX2 and portable Dijkstra passes give the same assignment, and so do one and two
    /// threads, on sizes that reach the shortest-path phase (random and Gram matrices leave rows
    /// free after the row reduction) and on ties. (Optimality itself: brute force above at n <= 7,
    /// scipy in the interop suite up to n = 401.)
    func testLAPPathsAgree() throws {
        var rng = SeededRNG(seed: 2, stream: "lap-paths")
        defer { wt_lap_allow_avx2(1) }
        for (trial, n) in [5, 37, 130, 301, 302, 303, 1030].enumerated() {
            for kind in 0..<4 {
                let r = (0..<(n * 4)).map { _ in rng.nextUnitDouble() - 0.5 }
                let c: [Double] = (0..<(n * n)).map { k in
                    switch kind {
                    case 0: return rng.nextUnitDouble()
                    case 1: return Double(rng.next() % 3)
                    case 2: return (0..<4).reduce(0.0) { $0 + r[(k / n) * 4 + $1] * r[(k % n) * 4 + $1] }
                    default: return r[k / n]
                    }
                }
                wt_lap_allow_avx2(1)
                let fast = try LinearAssignment.solve(c, n: n, maximize: true)
                wt_lap_allow_avx2(0)
                let portable = try LinearAssignment.solve(c, n: n, maximize: true)
                XCTAssertEqual(fast, portable, "n \(n) kind \(kind) trial \(trial)")
                if n > 300 {
                    // Two threads (the split runs from n = 1024; below it this checks the fallback).
                    wt_lap_allow_avx2(1)
                    XCTAssertEqual(try LinearAssignment.solve(c, n: n, maximize: true, threads: 2), fast)
                }
                XCTAssertEqual(Set(fast), Set(0..<n))
            }
        }
    }

    func testLAPPlantedAndDegenerate() throws {
        // B's unit g[i] is A's unit i: the answer must take B's unit g[i] into slot i.
        let g = [3, 0, 4, 1, 2]
        var c = [Double](repeating: 0, count: 25)
        for i in 0..<5 { c[i * 5 + g[i]] = 1 }
        XCTAssertEqual(try LinearAssignment.solve(c, n: 5, maximize: true), g)
        XCTAssertEqual(try LinearAssignment.solve([Double](repeating: 7, count: 16), n: 4, maximize: true), [0, 1, 2, 3])
        XCTAssertEqual(try LinearAssignment.solve([2.5], n: 1, maximize: true), [0])
        XCTAssertEqual(try LinearAssignment.solve([], n: 0, maximize: true), [])
        XCTAssertThrowsError(try LinearAssignment.solve([1, .nan, 0, 1], n: 2, maximize: true))
        XCTAssertThrowsError(try LinearAssignment.solve([1, .infinity, 0, 1], n: 2, maximize: true))
        XCTAssertThrowsError(try LinearAssignment.solve([1, 0, 0, -1e301], n: 2, maximize: true)) { error in
            XCTAssertEqual("\(error)", "the cost matrix holds a value above 1e300 in magnitude at (1, 1) (sums of such values overflow)")
        }
        // Up to the limit it solves: the sums stay finite.
        XCTAssertEqual(try LinearAssignment.solve([1e300, -1e300, -1e300, 1e300], n: 2, maximize: true), [0, 1])
    }

    func testGatherAlongSeveralAxes() {
        // 2 x 3 x 4 tensor of distinct values; permute axes 0 and 2.
        let v = (0..<24).map { Float($0) }
        let out = Gather.floats(v, shape: [2, 3, 4], [[1, 0], nil, [3, 1, 0, 2]])
        for i in 0..<2 { for j in 0..<3 { for k in 0..<4 {
            XCTAssertEqual(out[(i * 3 + j) * 4 + k], v[([1, 0][i] * 3 + j) * 4 + [3, 1, 0, 2][k]])
        } } }
        XCTAssertEqual(Gather.floats(v, shape: [2, 3, 4], [nil, nil, nil]), v)
    }

    func testSpecFileParsingAndErrors() throws {
        let good = try JSONParser.parse("""
        {"spaces": {"kv": 2, "q.{0}": 2}, "tensors": {"w": [["kv", "q.{0}", 4], null],
         "f": [{"concat": [["kv", 2], ["kv", 2]]}]}, "fixed": ["buf*"]}
        """)
        let spec = try PermutationSpec.parse(good, file: "s.json")
        XCTAssertEqual(spec.tensor("w")?.axes[0]?.length, 16)
        XCTAssertEqual(spec.tensor("f")?.axes[0]?.segments.count, 2)
        XCTAssertEqual(try PermutationSpec.parse(spec.json, file: "again"), spec)
        for (text, message) in [
            ("[]", "a spec is an object"),
            (#"{"spaces": {"a": 0}, "tensors": {}}"#, "positive integer"),
            (#"{"spaces": {"a": 2}, "tensors": {"w": ["b"]}}"#, "does not declare"),
            (#"{"spaces": {}, "tensors": {"w": [[]]}}"#, "non-empty list"),
            (#"{"spaces": {}, "tensors": {}, "extra": 1}"#, "unknown key"),
        ] {
            XCTAssertThrowsError(try PermutationSpec.parse(try JSONParser.parse(text), file: "s.json")) { e in
                XCTAssertTrue("\(e)".contains(message), "\(e)")
            }
        }
    }

    func testTemplateInstances() {
        let t = SpaceTemplate("layers.3.vdim.{0}.x{1}")
        XCTAssertTrue(t.isFamily)
        XCTAssertEqual(t.instance([5, 7]), "layers.3.vdim.5.x7")
        XCTAssertFalse(SpaceTemplate("res").isFamily)
    }
}
