import XCTest
import Linalg
import CQuant
@testable import Surgery

// The Swift DSnoT that CQuant's wt_dsnot_rows replaced (whole rows sorted, the plainest statement of
// the rule; it matched the numpy reference of Tests/interop/test_prune.py), kept as what the C
// kernel is checked against.
struct DSnoTReference {
    var maxCycles = 50
    var threshold = 0.1
    init() {}

    /// Refines `pruned` (true = pruned) for one row in place; returns the number of swaps.
    /// - Parameters:
    ///   - w: the row's weights; mean, variance: per input channel; score: the Wanda score of each
    ///     entry (the order in which kept weights are given up); nm: (keep N, of M) or nil.
    func refine(_ pruned: inout ArraySlice<Bool>, w: ArraySlice<Float>, mean: [Double], variance: [Double],
                       score: ArraySlice<Float>, nm: (n: Int, m: Int)?) -> Int {
        let cols = w.count, base = w.startIndex, sBase = score.startIndex, pBase = pruned.startIndex
        let contribution = (0..<cols).map { Double(w[base + $0]) * mean[$0] }
        var err = 0.0
        for j in 0..<cols where pruned[pBase + j] { err += contribution[j] }
        let sign0 = err.sign == .minus ? -1.0 : (err == 0 ? 0 : 1)
        // Growth candidates: pruned entries, ascending by contribution / variance (stable).
        let grow = (0..<cols).filter { pruned[pBase + $0] }.sorted { a, b in
            let x = contribution[a] / max(variance[a], 1e-12), y = contribution[b] / max(variance[b], 1e-12)
            return x < y || (x == y && a < b)
        }
        var lo = 0, hi = grow.count - 1
        // Unstructured pruning candidates: kept entries ascending by Wanda score, those with a
        // negative contribution (pruned first while err >= 0) and those with a positive one.
        let kept = (0..<cols).filter { !pruned[pBase + $0] }.sorted { a, b in
            score[sBase + a] < score[sBase + b] || (score[sBase + a] == score[sBase + b] && a < b)
        }
        let negative = kept.filter { contribution[$0] < 0 }, positive = kept.filter { contribution[$0] > 0 }
        var ni = 0, pi = 0
        var blocked = [Bool](repeating: false, count: cols)   // N:M: entries not to prune (pruned at start or grown)
        for j in 0..<cols where pruned[pBase + j] { blocked[j] = true }
        var swaps = 0
        for _ in 0..<maxCycles {
            guard abs(err) > threshold, lo <= hi else { break }
            let r = err > 0 ? grow[hi] : grow[lo]
            let p: Int
            if let nm {
                let start = r - r % nm.m
                guard let q = (start..<(start + nm.m)).filter({ !blocked[$0] }).min(by: { a, b in
                    score[sBase + a] < score[sBase + b] || (score[sBase + a] == score[sBase + b] && a < b)
                }) else { break }
                p = q
            } else if err < 0 {
                guard pi < positive.count else { break }
                p = positive[pi]
            } else {
                guard ni < negative.count else { break }
                p = negative[ni]
            }
            let after = err + contribution[p] - contribution[r]
            let signAfter = after.sign == .minus ? -1.0 : (after == 0 ? 0 : 1)
            guard signAfter == sign0 else { break }
            pruned[pBase + p] = true
            pruned[pBase + r] = false
            blocked[p] = true
            if nm == nil { if err < 0 { pi += 1 } else { ni += 1 } }
            if err > 0 { hi -= 1 } else { lo += 1 }
            err = after
            swaps += 1
        }
        return swaps
    }
}

final class DSnoTKernelTests: XCTestCase {
    /// Both C paths (the tournament, and the ordered ends that rows with a non-finite candidate
    /// take), with AVX2 and without, against the Swift statement.
    func testCKernelEqualsTheSwiftStatement() {
        var g = SeededRNG(seed: 12, stream: "dsnot")
        for (cols, cycles, threshold, nm, infinite) in [(96, 50, 0.01, nil, false), (1000, 50, 0.01, nil, false), (1000, 3, 0.001, nil, false),
                                                        (1000, 1000, 0.0, nil, false), (96, 50, 0.01, 4, false), (1000, 7, 0.001, 4, false),
                                                        (64, 0, 0.01, nil, false), (130, 50, 0.01, nil, true), (1000, 1000, 0.0, nil, true),
                                                        (200, 50, 0.01, 4, true)] as [(Int, Int, Double, Int?, Bool)] {
            let rows = 13   // groups of eight rows (two four-row chains), then five (one chain and a row alone)
            // coarse weights (ties in every order) and moments with both signs
            let w = (0..<(rows * cols)).map { _ in Float(Int(g.nextGaussian() * 8)) / 16 }
            var mean = (0..<cols).map { _ in Double(g.nextGaussian()) * 0.5 }
            let variance = (0..<cols).map { j in Double(abs(g.nextGaussian())) + (j % 5 == 0 ? 0 : 0.1) }
            var score = w.indices.map { Float(Double(abs(w[$0])) * (1 + Double($0 % cols % 3))) }
            if infinite {
                // infinite scores among the kept candidates, and an infinite growth key (a huge mean
                // over a tiny variance) in one column: the ordered-ends path
                for j in stride(from: 0, to: score.count, by: 37) { score[j] = .infinity }
                mean[cols / 2] = 1e300
            }
            var initial = [Bool](repeating: false, count: w.count)
            for r in 0..<rows {
                if let m = nm {
                    for gstart in stride(from: 0, to: cols, by: m) {   // prune the 2 smallest scores of each group
                        let idx = (gstart..<(gstart + m)).sorted { score[r * cols + $0] < score[r * cols + $1] || (score[r * cols + $0] == score[r * cols + $1] && $0 < $1) }
                        for j in idx.prefix(m / 2) { initial[r * cols + j] = true }
                    }
                } else {
                    for j in 0..<cols where (j * 7 + r) % 2 == 0 { initial[r * cols + j] = true }
                }
            }
            var reference = DSnoTReference()
            reference.maxCycles = cycles
            reference.threshold = threshold
            var expected = initial, expectedSwaps = 0
            for r in 0..<rows {
                let range = (r * cols)..<((r + 1) * cols)
                expectedSwaps += reference.refine(&expected[range], w: w[range], mean: mean, variance: variance, score: score[range],
                                                  nm: nm.map { (n: $0 / 2, m: $0) })
            }
            var kernel = DSnoT()
            kernel.maxCycles = cycles
            kernel.threshold = threshold
            for avx2: Int32 in [1, 0] {
                wt_quant_allow_avx2(avx2)
                defer { wt_quant_allow_avx2(1) }
                var got = initial
                let swaps = kernel.refine(&got, w: w, cols: cols, mean: mean, variance: variance, score: score, groupSize: nm)
                let what = "cols \(cols) cycles \(cycles) nm \(String(describing: nm)) infinite \(infinite) avx2 \(avx2)"
                XCTAssertEqual(got, expected, what)
                XCTAssertEqual(swaps, expectedSwaps, what)
            }
            if cycles > 0 && threshold <= 0.01 { XCTAssertGreaterThan(expectedSwaps, 0, "the data should make DSnoT swap") }
        }
    }

    /// The streamed row path (`wt_prune_rows` with DSnoT) gives the generic path's masks: the
    /// per-row selection, then DSnoT's refinement with the Wanda score as the giving-up order, for
    /// Wanda and magnitude initial masks, top-k and N:M, 13 rows (a group of eight, then five), with AVX2 and
    /// without.
    func testStreamedRowsEqualMaskThenRefine() {
        var g = SeededRNG(seed: 13, stream: "dsnot rows")
        for cols in [300, 37, 130] {
            let rows = 13
            let w = (0..<(rows * cols)).map { _ in Float(Int(g.nextGaussian() * 8)) / 16 }
            let mean = (0..<cols).map { _ in Double(g.nextGaussian()) * 0.5 }
            let variance = (0..<cols).map { _ in Double(abs(g.nextGaussian())) + 0.05 }
            let act = (0..<cols).map { Double($0 % 7) + 0.5 }
            let root = act.map { $0.squareRoot() }
            let wanda = w.indices.map { Float(Double(abs(w[$0])) * root[$0 % cols]) }
            var dsnot = DSnoT()
            dsnot.threshold = 0.01
            var reference = DSnoTReference()
            reference.threshold = 0.01
            var cases: [(Int, Bool, (n: Int, m: Int)?)] = [(cols / 2, true, nil), (cols / 2, false, nil), (cols * 3 / 10, true, nil), (0, true, nil),
                                                            (cols, false, nil)]
            if cols % 4 == 0 { cases += [(0, true, (n: 2, m: 4)), (0, false, (n: 2, m: 4)), (0, true, (n: 1, m: 4))] }
            for (k, isWanda, nm) in cases {
                let selection = isWanda ? wanda : w
                var expected = selection.withUnsafeBufferPointer { p in
                    nm.map { PruneMask.nm(p, cols: cols, n: $0.n, m: $0.m) } ?? PruneMask.perRow(p, cols: cols, sparsity: Double(k) / Double(cols))
                }
                var expectedSwaps = 0
                for r in 0..<rows {
                    let range = (r * cols)..<((r + 1) * cols)
                    expectedSwaps += reference.refine(&expected[range], w: w[range], mean: mean, variance: variance, score: wanda[range], nm: nm)
                }
                if k == cols / 2 || nm?.n == 2 { XCTAssertGreaterThan(expectedSwaps, 0, "the data should make DSnoT swap") }
                let rule = wt_row_rule(k: k, nm_keep: nm?.n ?? 0, nm_m: nm?.m ?? 0)
                for avx2: Int32 in [1, 0] {
                    wt_quant_allow_avx2(avx2)
                    defer { wt_quant_allow_avx2(1) }
                    var out = [Float](repeating: 1, count: w.count)
                    var scratch = [Double](repeating: 0, count: wt_prune_rows_scratch_bytes(cols, 1) / 8 + 1)
                    var tally = wt_prune_tally()
                    mean.withUnsafeBufferPointer { mp in variance.withUnsafeBufferPointer { vp in
                        var params = dsnot.parameters(mean: mp.baseAddress!, variance: vp.baseAddress!, groupSize: nm?.m)
                        w.withUnsafeBufferPointer { wp in out.withUnsafeMutableBytes { o in
                            root.withUnsafeBufferPointer { s in act.withUnsafeBufferPointer { a in
                                wt_prune_rows(wp.baseAddress!, wp.baseAddress!, 4, rows, cols, rule, isWanda ? s.baseAddress! : nil, a.baseAddress!,
                                              &params, isWanda ? nil : s.baseAddress!, o.baseAddress!, &scratch, &tally)
                            } }
                        } }
                    } }
                    let what = "cols \(cols) k \(k) wanda \(isWanda) nm \(String(describing: nm)) avx2 \(avx2)"
                    XCTAssertEqual(out.map(\.bitPattern), w.indices.map { expected[$0] ? Float(0).bitPattern : w[$0].bitPattern }, what)
                    XCTAssertEqual(tally.swaps, expectedSwaps, what)
                    XCTAssertEqual(tally.pruned, expected.filter { $0 }.count, what)
                }
            }
        }
    }
}
