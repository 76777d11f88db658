import XCTest
import CMerge
import Linalg
@testable import Surgery

/// CMerge's passes against the Swift rules they replaced (stated here one entry at a time), on
/// every path (AVX-512, AVX2, portable).
final class MergeKernelTests: XCTestCase {
    func values(_ n: Int, seed: String, scale: Float = 1) -> [Float] {
        var g = SeededRNG(seed: 7, stream: seed)
        return (0..<n).map { _ in g.nextGaussian() * scale }
    }

    /// Values with many exact ties and zeros (a few distinct magnitudes of both signs).
    func tied(_ n: Int, seed: String) -> [Float] {
        var g = SeededRNG(seed: 7, stream: seed)
        return (0..<n).map { _ in Float(Int(g.next() % 7) - 3) * 0.25 }
    }

    /// Runs body on every path of CMerge: AVX-512 (where the CPU has it: else it is AVX2 again),
    /// AVX2, portable.
    func everyPath(_ body: () -> Void) {
        defer { wt_merge_allow_avx2(1); wt_merge_allow_avx512(1) }
        for (avx2, avx512): (Int32, Int32) in [(1, 1), (1, 0), (0, 0)] {
            wt_merge_allow_avx2(avx2)
            wt_merge_allow_avx512(avx512)
            body()
        }
    }

    func testElectionAndSumFollowTheRule() {
        for M in [1, 2, 3, 5] {
            let n = 1003
            let xs = (0..<M).map { m in m % 2 == 0 ? values(n, seed: "e\(m)") : tied(n, seed: "e\(m)") }
            let w = (0..<M).map { 0.5 + Double($0) * 0.25 }
            for normalize in [true, false] {
                var expected = [Float](repeating: 0, count: n), conflicts = 0
                for i in 0..<n {
                    let d = (0..<M).map { Double(xs[$0][i]) * w[$0] }
                    let total = d.reduce(0, +)
                    if d.contains(where: { $0 > 0 }) && d.contains(where: { $0 < 0 }) { conflicts += 1 }
                    let sign = total < 0 ? -1.0 : 1.0
                    var sum = 0.0, div = 0.0
                    for m in 0..<M where d[m] * sign > 0 { sum += d[m]; div += w[m] }
                    if normalize && div != 0 { sum /= div }
                    expected[i] = Float(sum * 0.9)
                }
                everyPath {
                    var out = [Float](repeating: .nan, count: n)
                    let c = TaskArithmeticPipeline.electAndSum(xs.map { $0.withUnsafeBufferPointer { $0.baseAddress! } }, weights: w,
                                                               into: &out, count: n, normalize: normalize, lambda: 0.9)
                    XCTAssertEqual(out, expected, "M \(M) normalize \(normalize)")
                    XCTAssertEqual(c, conflicts)
                }
            }
        }
    }

    func testDeltaSumsAndAbsoluteSumsAreTheLaneSums() {
        let n = 1001, base = values(n, seed: "base")
        let xs = (0..<4).map { values(n, seed: "x\($0)") }
        var sq = [SIMD4<Double>](repeating: .zero, count: 4), dots = [SIMD4<Double>](repeating: .zero, count: 6)
        var abs = SIMD4<Double>.zero
        for i in 0..<(n & ~3) {
            let d = xs.map { Double($0[i]) - Double(base[i]) }
            var k = 0
            for p in 0..<4 {
                sq[p][i & 3] += d[p] * d[p]
                for q in (p + 1)..<4 { dots[k][i & 3] += d[p] * d[q]; k += 1 }
            }
            abs[i & 3] += Double(Swift.abs(xs[0][i]))
        }
        var results: [[Double]] = []
        everyPath {
            let g = VectorMath.deltaSums(xs.map { $0.withUnsafeBufferPointer { $0.baseAddress! } }, base: base, count: n)
            var a = VectorMath.AbsSum(count: n)
            a.add(xs[0], count: n, at: 0)
            results.append(g.squares + g.dots + [a.total])
        }
        XCTAssertEqual(results[0], results[1])
        XCTAssertEqual(results[0], results[2])
        var expected = sq.map { $0.sum() } + dots.map { $0.sum() }
        for i in (n & ~3)..<n {   // the tail after the lanes
            let d = xs.map { Double($0[i]) - Double(base[i]) }
            var k = 0
            for p in 0..<4 { expected[p] += d[p] * d[p]; for q in (p + 1)..<4 { expected[4 + k] += d[p] * d[q]; k += 1 } }
        }
        XCTAssertEqual(Array(results[0].prefix(10)), expected)
        XCTAssertEqual(results[0][10], (n & ~3..<n).reduce(abs.sum()) { $0 + Double(Swift.abs(xs[0][$1])) })
    }

    func testKeepAboveKeepsTiesInIndexOrder() {
        let x = tied(1003, seed: "k")
        let t = Float(0.5).bitPattern
        for ties in [0, 1, 17, 10_000] {
            var expected = x, left = ties, keptExpected = 0
            for i in x.indices {
                let m = x[i].bitPattern & 0x7FFF_FFFF
                if m > t || (m == t && left > 0) { if m == t { left -= 1 }; keptExpected += 1 } else { expected[i] = 0 }
            }
            everyPath {
                var p = x, l = ties
                let kept = wt_keep_above(&p, p.count, t, &l)
                XCTAssertEqual(p.map(\.bitPattern), expected.map(\.bitPattern))
                XCTAssertEqual(Int(kept), keptExpected)
                XCTAssertEqual(l, left)
            }
        }
    }

    /// The bracketed one-pass selection finds what the three radix passes find, on spread values,
    /// on heavy ties (where the bracket overflows and the passes run) and at the ends of the order.
    func testBracketedSelectionEqualsTheRadixSelection() {
        let n = 300_007
        for data in [values(n, seed: "s"), tied(n, seed: "s"), values(n, seed: "z").map { $0 > 1 ? $0 : 0 }] {
            for k in [1, 2, n / 10, n / 2, n - 5, n] {
                var h = [Int](repeating: 0, count: 2048)
                let expected = data.withUnsafeBufferPointer { x in Sparsifier.selectMagnitude(k, scratch: &h) { $0(x) } }
                everyPath {
                    let got = data.withUnsafeBufferPointer { x in
                        Sparsifier.selectMagnitude(k, count: n, scratch: &h, sample: { s, c, into in into.update(from: x.baseAddress! + s, count: c) },
                                                   blocks: { body in   // in uneven blocks, as a streamed tensor arrives
                                                       var s = 0
                                                       while s < n { let c = min(n - s, 65_537); body(UnsafeBufferPointer(rebasing: x[s..<(s + c)])); s += c }
                                                   })
                    }
                    XCTAssertEqual(got.value.bitPattern, expected.value.bitPattern, "k \(k)")
                    XCTAssertEqual(got.greater, expected.greater)
                    XCTAssertEqual(got.equal, expected.equal)
                }
            }
        }
    }

    /// Skipping the radix passes whose digit every entry shares (the entries inside a bracket)
    /// finds what the three passes find: ranges sharing 11, 21 and all 31 bits.
    func testSelectionWithinAKnownRangeSkipsOnlySharedDigits() {
        var g = SeededRNG(seed: 5, stream: "within")
        for (lo, span) in [(UInt32(0x3A10_0000), UInt32(0xF_FFFF)), (0x3A12_3400, 0x3FF), (0x3A12_3456, 0), (0x3A1F_FF00, 0x200)] {
            let n = 5000
            let data = (0..<n).map { _ in Float(bitPattern: lo + UInt32(g.next() % UInt64(span + 1))) * (g.next() & 1 == 0 ? 1 : -1) }
            let hi = data.map { $0.bitPattern & 0x7FFF_FFFF }.max()!, low = data.map { $0.bitPattern & 0x7FFF_FFFF }.min()!
            for k in [1, 7, n / 2, n - 1, n] {
                var h = [Int](repeating: 0, count: 2048)
                let expected = data.withUnsafeBufferPointer { x in Sparsifier.selectMagnitude(k, scratch: &h) { $0(x) } }
                let got = data.withUnsafeBufferPointer { x in Sparsifier.selectMagnitude(k, scratch: &h, within: (low, hi, n)) { $0(x) } }
                XCTAssertEqual(got.value.bitPattern, expected.value.bitPattern, "lo \(lo) span \(span) k \(k)")
                XCTAssertEqual(got.greater, expected.greater)
                XCTAssertEqual(got.equal, expected.equal)
            }
        }
    }

    /// Bulk draws are the stream's next draws, one at a time, whatever the count: below a round
    /// (serial), whole rounds of the eight jumped-ahead lanes, and rounds with a serial tail; the
    /// state after them is the stream's after as many draws. Every path.
    func testBulkDrawsAreTheStreamDrawnOneAtATime() {
        for n in [0, 1, 7, 16383, 16384, 16385, 3 * 16384 + 77] {
            everyPath {
                var rng = SeededRNG(seed: 11, stream: "bulk", block: UInt64(n)), reference = rng
                let expected = (0..<n).map { _ in UInt32(reference.next() >> 40) }
                var got = [UInt32](repeating: 0xFFFF_FFFF, count: n)
                got.withUnsafeMutableBufferPointer { out in rng.withState { wt_rng_draws24($0, out.baseAddress, n) } }
                XCTAssertEqual(got, expected, "n \(n) avx2 \(wt_merge_uses_avx2())")
                XCTAssertEqual(rng.next(), reference.next(), "n \(n): the state advanced by n draws")
            }
        }
    }

    /// The kernel compares integers (v < ceil(density 2^24)) where the rule compares v 2^-24 < density:
    /// densities on and between the 2^-24 steps, and the ends; a short block (drawn 256 at a time)
    /// and one of two bulk rounds and a tail, on every path.
    func testDAREDrawsTheSeededStream() {
        for n in [1001, 2 * 16384 + 13] {
            let x = values(n, seed: "d")
            for density in [0.3, 0.5, 1.0 / 3, 0x1p-24, 3 * 0x1p-25, 0, 1, 1 - 0x1p-24, 1 - 0x1p-30] {
                everyPath {
                    var rng = SeededRNG(seed: 3, stream: "t", block: 1), reference = rng
                    var expected = x, keptExpected = 0
                    for i in x.indices {
                        if Double(reference.nextUnitFloat()) < density { expected[i] *= 2; keptExpected += 1 } else { expected[i] = 0 }
                    }
                    var p = x
                    let kept = rng.withState { wt_dare_drop(&p, p.count, $0, density, 2) }
                    XCTAssertEqual(p.map(\.bitPattern), expected.map(\.bitPattern), "n \(n) density \(density) avx2 \(wt_merge_uses_avx2())")
                    XCTAssertEqual(Int(kept), keptExpected)
                    XCTAssertEqual(rng.next(), reference.next())   // the state advanced by as many draws
                }
            }
        }
    }

    /// A DELLA row scratch as BlockSparsifier makes one: allocated, then cleared once.
    func dellaScratch(_ n: Int) -> UnsafeMutableRawPointer {
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: wt_della_scratch_bytes(n), alignment: 64)
        wt_della_scratch_clear(scratch)
        return scratch
    }

    /// DELLA's row rule as first written: ranks by a stable sort, probabilities by rank, one draw per entry.
    func testDELLARowRanksByMagnitudeWithTiesByIndex() {
        // Long rows: draws landing inside a bucket's range are ranked by sorting the bucket once
        // (heavy ties: buckets of thousands), or by a scan (the short rows). One scratch for every
        // row (it must be left as each row found it: the counts of the buckets a row used zero).
        let scratch = dellaScratch(40000)
        defer { scratch.deallocate() }
        for (x, cols) in [(tied(777, seed: "r"), 777), (values(2048, seed: "r"), 2048), ([Float(-0.0), 0, 2], 3), ([Float(5)], 1),
                          (tied(20011, seed: "long"), 20011), (values(40000, seed: "long"), 40000)] {
            for inverse in [false, true] { everyPath {
                let probs = BlockSparsifier.dellaProbabilities(count: cols, density: 0.4, epsilon: 0.15)
                var rng = SeededRNG(seed: 1, stream: "della"), reference = rng
                let order = x.indices.sorted { abs(x[$0]) < abs(x[$1]) || (abs(x[$0]) == abs(x[$1]) && $0 < $1) }   // stable by index
                var prob = [Double](repeating: 0, count: cols)
                for (rank, idx) in order.enumerated() { prob[idx] = probs[rank] }
                var expected = x, keptExpected = 0
                for j in 0..<cols {
                    if Double(reference.nextUnitFloat()) < prob[j] {
                        if inverse { expected[j] = Float(Double(x[j]) / prob[j]) }
                        keptExpected += 1
                    } else { expected[j] = 0 }
                }
                var p = x
                var draws = [UInt32](repeating: 0, count: cols)
                draws.withUnsafeMutableBufferPointer { d in rng.withState { wt_rng_draws24($0, d.baseAddress, cols) } }
                let kept = wt_della_row(&p, cols, draws, probs, inverse ? 1 : 0, scratch)
                XCTAssertEqual(p.map(\.bitPattern), expected.map(\.bitPattern), "cols \(cols) inverse \(inverse) avx2 \(wt_merge_uses_avx2())")
                XCTAssertEqual(Int(kept), keptExpected)
                XCTAssertEqual(rng.next(), reference.next())
            } }
        }
    }

    /// Short rows whose entries all share one bucket ([1, 1.125): the top 11 bits agree): about a
    /// third of the draws land inside the bucket's probability range and are ranked by a scan of
    /// the bucket (9 and 13 members: whole groups of the scan's four lanes and a rest), where a
    /// rank off by one moves the probability by a twelfth of the range. 400 rows. Every path.
    func testDELLARanksInsideOneBucket() {
        for cols in [9, 13] {
            let probs = BlockSparsifier.dellaProbabilities(count: cols, density: 0.4, epsilon: 0.15)
            everyPath {
                var mismatches = 0
                for seed in 0..<UInt64(200) {
                    var g = SeededRNG(seed: seed, stream: "one bucket")
                    let x = (0..<cols).map { i in Float(1 + 0.12 * Double(g.nextUnitFloat())) * (i % 3 == 0 ? -1 : 1) }
                    var rng = SeededRNG(seed: seed, stream: "della"), reference = rng
                    let order = x.indices.sorted { abs(x[$0]) < abs(x[$1]) || (abs(x[$0]) == abs(x[$1]) && $0 < $1) }
                    var prob = [Double](repeating: 0, count: cols)
                    for (rank, idx) in order.enumerated() { prob[idx] = probs[rank] }
                    let expected = x.indices.map { j in Double(reference.nextUnitFloat()) < prob[j] ? x[j] : 0 }
                    var p = x, draws = [UInt32](repeating: 0, count: cols)
                    draws.withUnsafeMutableBufferPointer { d in rng.withState { wt_rng_draws24($0, d.baseAddress, cols) } }
                    let scratch = dellaScratch(cols)
                    _ = wt_della_row(&p, cols, draws, probs, 0, scratch)
                    scratch.deallocate()
                    if p.map(\.bitPattern) != expected.map(\.bitPattern) { mismatches += 1 }
                }
                XCTAssertEqual(mismatches, 0, "rows of \(cols) avx2 \(wt_merge_uses_avx2())")
            }
        }
    }

    /// DELLA through the block sparsifier draws the tensor's stream in order although it draws in
    /// bulk, whole rows and whole rounds at a time: rows of 3000 (a round leaves a part row drawn,
    /// carried into the next draws) and of 20000 (longer than a round), blocks of three fifths of
    /// the rows and the rest; row by row, one draw at a time, as the reference. Every path.
    func testDELLABlocksConsumeTheStreamInOrder() throws {
        for (rows, cols) in [(50, 3000), (5, 20000)] {
            let x = values(rows * cols, seed: "della-blocks")
            let split = rows * 3 / 5
            for inverse in [false, true] {
                everyPath {
                    let probs = BlockSparsifier.dellaProbabilities(count: cols, density: 0.5, epsilon: 0.2)
                    var reference = SeededRNG(seed: 5, stream: "w"), expected = x, keptExpected = 0
                    let scratch = dellaScratch(cols)
                    defer { scratch.deallocate() }
                    for r in 0..<rows {
                        let draws = (0..<cols).map { _ in UInt32(reference.next() >> 40) }
                        keptExpected += expected.withUnsafeMutableBufferPointer { Int(wt_della_row($0.baseAddress! + r * cols, cols, draws, probs, inverse ? 1 : 0, scratch)) }
                    }
                    var sparsifier = try! BlockSparsifier(.dellaMagprune, count: x.count, rowLength: cols, density: 0.5, gamma: 0, epsilon: 0.2,
                                                          rescale: inverse ? .inverseDensity : nil, rng: SeededRNG(seed: 5, stream: "w"), tensor: "w",
                                                          sample: { _, _, _ in XCTFail("DELLA reads no sample") }, blocks: { _ in XCTFail("DELLA makes no pass") })
                    var p = x, kept = 0
                    p.withUnsafeMutableBufferPointer { b in
                        kept += sparsifier.apply(b.baseAddress!, count: split * cols)
                        kept += sparsifier.apply(b.baseAddress! + split * cols, count: (rows - split) * cols)
                    }
                    XCTAssertEqual(p.map(\.bitPattern), expected.map(\.bitPattern), "\(rows) x \(cols) inverse \(inverse) avx2 \(wt_merge_uses_avx2())")
                    XCTAssertEqual(kept, keptExpected)
                }
            }
        }
    }

    /// The kept set remembered as bits, written and read in pieces that start anywhere in a byte.
    func testKeptMaskRoundTripsAtAnyOffset() {
        let x = tied(203, seed: "m")   // about a seventh are zeros: read back as dropped
        let expectedBits = (0..<26).map { k in (0..<8).reduce(UInt8(0)) { byte, l in
            8 * k + l < x.count && x[8 * k + l] != 0 ? byte | UInt8(1) << l : byte } }
        everyPath {
            var bits = [UInt8](repeating: 0xA5, count: 26)
            var at = 0
            for piece in [3, 8, 1, 17, 64, 110] {
                x.withUnsafeBufferPointer { wt_mask_store($0.baseAddress! + at, piece, &bits, at) }
                at += piece
            }
            XCTAssertEqual(Array(bits.prefix(25)), Array(expectedBits.prefix(25)))
            XCTAssertEqual(bits[25] & 0x07, expectedBits[25])   // bits past the 203 entries are left alone
            var back = x.map { $0 == 0 ? Float(7) : $0 }   // zeros replaced: the mask must zero them again
            at = 0
            for piece in [5, 6, 100, 92] {
                back.withUnsafeMutableBufferPointer { wt_mask_apply($0.baseAddress! + at, piece, bits, at) }
                at += piece
            }
            XCTAssertEqual(back.map(\.bitPattern), x.map { ($0 == 0 ? 0 : $0).bitPattern })
        }
    }

    /// The fused passes give the bits of the separate ones: geometry then subtraction; add then sums.
    func testFusedPassesEqualTheSeparateOnes() {
        for n in [0, 3, 4, 1001] {
            let base = values(n, seed: "fb\(n)"), xs = (0..<3).map { values(n, seed: "fx\(n)-\($0)") }
            func copies(_ arrays: [[Float]]) -> [UnsafeMutablePointer<Float>] {
                arrays.map { a in
                    let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n))
                    p.initialize(from: a, count: n)
                    return p
                }
            }
            everyPath {
                let fused = copies(xs), plain = copies(xs)
                defer { (fused + plain).forEach { $0.deallocate() } }
                let g = VectorMath.deltaSumsSubtracting(fused, base: base, count: n)
                let expected = VectorMath.deltaSums(plain.map { UnsafePointer($0) }, base: base, count: n)
                XCTAssertEqual(g.squares, expected.squares)
                XCTAssertEqual(g.dots, expected.dots)
                for m in 0..<3 { XCTAssertEqual(Array(UnsafeBufferPointer(start: fused[m], count: n)), zip(xs[m], base).map { $0 - $1 }) }

                let out = copies([xs[0]])[0], added = zip(xs[0], base).map { $0 + $1 }
                defer { out.deallocate() }
                let sums = VectorMath.addBase(out, base, count: n)
                XCTAssertEqual(Array(UnsafeBufferPointer(start: out, count: n)), added)
                let again = copies([added])[0]
                defer { again.deallocate() }
                XCTAssertEqual(sums.change, VectorMath.deltaSums([UnsafePointer(again)], base: base, count: n).squares[0])
                XCTAssertEqual(sums.baseSquares, base.withUnsafeBufferPointer { b in n == 0 ? 0 : VectorMath.dot(b.baseAddress!, b.baseAddress!, n) })
            }
        }
    }
    /// wt_ties_block gives the bits of the separate passes it fuses (geometry and subtraction, the
    /// cut with its ties in index order or a remembered kept set, the L1 factor, election, base
    /// added and its sums), block after block so the ties still to keep carry over and the kept
    /// set's bits start mid-byte, with each kind of cut: ties running out inside a quad, never, at
    /// once, keep-all and drop-all.
    func testTiesBlockEqualsTheSeparatePasses() {
        let half = Float(0.5).bitPattern
        // Per model position: a cut (threshold, ties) or a kept set (nil), and an L1 factor or none.
        let kinds: [(cut: (UInt32, Int)?, factor: Float?)] = [((half, 0), nil), (nil, 1.37), ((half, 37), nil), (nil, nil),
                                                              ((0, Int.max), nil), ((0x7FFF_FFFF, 0), nil), ((Float(0.25).bitPattern, 5), 0.5),
                                                              ((half, 3), nil)]
        for (M, n) in [(1, 3), (2, 1001), (3, 4099), (5, 1003), (8, 515)] {
            var g = SeededRNG(seed: 3, stream: "ties\(M)")
            // Bases on a 1/64 grid and models base + a few magnitudes: the deltas are exact, with
            // many entries equal to the cut.
            let base = (0..<n).map { _ in Float(Int(g.next() % 200) - 100) / 64 }
            let xs = (0..<M).map { m in zip(base, m % 2 == 0 ? tied(n, seed: "t\(m)") : values(n, seed: "t\(m)")).map { $0 + $1 } }
            let masks = (0..<M).map { _ in (0..<((n + 7) / 8)).map { _ in UInt8(truncatingIfNeeded: g.next()) } }
            let w = (0..<M).map { 0.5 + Double($0) * 0.25 }
            for normalize in [true, false] {
                var results: [[UInt64]] = []
                everyPath {
                    withCopies(masks) { maskPointers in
                        var specs = (0..<M).map { m in
                            let k = kinds[m % 8]
                            return wt_ties_model(cut: k.cut?.0 ?? 0, left: k.cut?.1 ?? 0, mask: k.cut == nil ? maskPointers[m] : nil,
                                                 scaled: k.factor == nil ? 0 : 1, factor: k.factor ?? 1)
                        }
                        var plainLeft = (0..<M).map { kinds[$0 % 8].cut?.1 ?? 0 }, start = 0
                        var got: [UInt64] = [], want: [UInt64] = []
                        for len in [n / 3, n - n / 3] {   // two blocks, the first of odd length
                            let b = Array(base[start..<(start + len)]), models = xs.map { Array($0[start..<(start + len)]) }
                            var out = [Float](repeating: .nan, count: len)
                            let f = withCopies(models) { ptrs in
                                TaskArithmeticPipeline.tiesBlock(ptrs, base: b, count: len, models: &specs, at: start, weights: w,
                                                                 normalize: normalize, lambda: 0.9, into: &out)
                            }
                            got += out.map { UInt64($0.bitPattern) } + f.kept.map { UInt64($0) } + specs.map { UInt64(truncatingIfNeeded: $0.left) }
                                + [UInt64(f.conflicts)] + (f.squares + f.dots + [f.change, f.baseSquares]).map(\.bitPattern)

                            var deltas = models
                            let geometry = deltas.withUnsafeMutableBufferPointers { VectorMath.deltaSumsSubtracting($0, base: b, count: len) }
                            var kept: [Int] = []
                            for m in 0..<M {
                                if let c = kinds[m % 8].cut {
                                    kept.append(Int(wt_keep_above(&deltas[m], len, c.0, &plainLeft[m])))
                                } else {
                                    wt_mask_apply(&deltas[m], len, maskPointers[m], start)
                                    kept.append((start..<(start + len)).filter { masks[m][$0 >> 3] >> ($0 & 7) & 1 == 1 }.count)
                                }
                                if let factor = kinds[m % 8].factor { for j in 0..<len { deltas[m][j] *= factor } }
                            }
                            var mixed = [Float](repeating: .nan, count: len)
                            let conflicts = withCopies(deltas) { ptrs in
                                TaskArithmeticPipeline.electAndSum(ptrs, weights: w, into: &mixed, count: len, normalize: normalize, lambda: 0.9)
                            }
                            let sums = VectorMath.addBase(&mixed, b, count: len)
                            want += mixed.map { UInt64($0.bitPattern) } + kept.map { UInt64($0) } + plainLeft.map { UInt64(truncatingIfNeeded: $0) }
                                + [UInt64(conflicts)] + (geometry.squares + geometry.dots + [sums.change, sums.baseSquares]).map(\.bitPattern)
                            start += len
                        }
                        let first = zip(got, want).enumerated().first { $1.0 != $1.1 }?.offset
                        XCTAssert(got.count == want.count && first == nil, "M \(M) n \(n) normalize \(normalize) avx512 \(wt_merge_uses_avx512()) avx2 \(wt_merge_uses_avx2()): first difference at \(first ?? -1)")
                        results.append(got)
                    }
                }
                XCTAssert(results.count == 3 && results.dropFirst().allSatisfy { $0 == results[0] }, "AVX-512, AVX2 and portable differ, M \(M)")
            }
        }
    }
}

/// Calls body with a pointer to a copy of each array's storage (exactly its count of elements).
private func withCopies<T, R>(_ arrays: [[T]], _ body: ([UnsafePointer<T>]) -> R) -> R {
    let copies = arrays.map { a in
        let p = UnsafeMutablePointer<T>.allocate(capacity: Swift.max(1, a.count))
        p.initialize(from: a, count: a.count)
        return p
    }
    defer { zip(copies, arrays).forEach { $0.deinitialize(count: $1.count); $0.deallocate() } }
    return body(copies.map { UnsafePointer($0) })
}

private extension Array where Element == [Float] {
    /// Calls body with mutable pointers to each array's storage, written back after.
    mutating func withUnsafeMutableBufferPointers<R>(_ body: ([UnsafeMutablePointer<Float>]) -> R) -> R {
        let copies = map { a in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(1, a.count))
            p.initialize(from: a, count: a.count)
            return p
        }
        let r = body(copies)
        for i in indices { self[i] = [Float](UnsafeBufferPointer(start: copies[i], count: self[i].count)); copies[i].deallocate() }
        return r
    }
}
