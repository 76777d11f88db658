import XCTest
import CQuant
@testable import Surgery
import Linalg
import SafeTensors

/// The C block kernels have an AVX2 path and a portable one; both must give the same bytes (the
/// portable one is what a CPU without AVX2 runs, and what states the rules). ggml itself is the
/// reference in the interop and client suites; this checks the two paths against each other on
/// random data and on the blocks that take the special cases (zeros of both signs, ties in
/// magnitude, subnormal scales, values near the f32 limit).
final class BlockKernelTests: XCTestCase {
    /// 256-value super-blocks covering the special cases, then random blocks of many magnitudes.
    static func samples() -> [Float] {
        var v: [Float] = []
        let tiny = Float.leastNormalMagnitude   // subnormals below come from it (literals would warn)
        func block(_ f: (Int) -> Float) { v += (0..<256).map(f) }
        block { _ in 0 }
        block { _ in -0.0 }
        block { $0 % 2 == 0 ? -0.0 : 0 }
        block { $0 == 5 ? -0.0 : Float($0 % 7) }            // -0 then positives only: the min is which zero?
        block { $0 == 3 ? 0 : -Float($0 % 5) - 0.0 }        // +0 among negatives and -0s
        block { _ in tiny / 117 }                              // subnormal: the reciprocal scale overflows
        block { $0 % 3 == 0 ? -tiny / 4 : tiny / 6 }
        block { _ in 3e38 }
        block { $0 % 2 == 0 ? 3.3e38 : -3.3e38 }             // max - min overflows
        block { [1, -1, 0.5, -0.5, 2.5, -2.5, 1.5, 0.25][$0 % 8] }   // ties in rounding
        block { $0 == 9 ? 4 : ($0 == 3 ? -4 : Float($0 % 3) - 1) }   // equal magnitudes, the first one wins
        block { Float($0) - 128 }
        var rng = SeededRNG(seed: 11, stream: "block kernels")
        for k in 0..<64 {
            let scale = Float(pow(10, Double(k % 16) * 5 - 40))
            block { _ in Float(rng.nextGaussian()) * scale }
        }
        return v
    }

    typealias Encoder = (UnsafePointer<Float>, Int, UnsafeMutableRawPointer?) -> Void
    typealias Decoder = (UnsafeRawPointer?, Int, UnsafeMutablePointer<Float>?) -> Void

    func bothPaths<T: Equatable>(_ f: () -> T) -> (T, T) {
        defer { wt_quant_allow_avx2(1) }
        wt_quant_allow_avx2(1)
        let vector = f()
        wt_quant_allow_avx2(0)
        XCTAssertEqual(wt_quant_uses_avx2(), 0)
        return (vector, f())
    }

    func testEncodersAndDecodersGiveTheSameBytesOnBothPaths() {
        let x = BlockKernelTests.samples()
        let types: [(String, Int, Encoder, Decoder?)] = [
            ("q8_0", 34 * 8, { wt_encode_q8_0($0, $1, $2) }, { wt_decode_q8_0($0, $1, $2) }),
            ("q4_0", 18 * 8, { wt_encode_q4_0($0, $1, $2) }, { wt_decode_q4_0($0, $1, $2) }),
            ("q4_1", 20 * 8, { wt_encode_q4_1($0, $1, $2) }, { wt_decode_q4_1($0, $1, $2) }),
            ("q5_0", 22 * 8, { wt_encode_q5_0($0, $1, $2) }, { wt_decode_q5_0($0, $1, $2) }),
            ("q5_1", 24 * 8, { wt_encode_q5_1($0, $1, $2) }, { wt_decode_q5_1($0, $1, $2) }),
            ("tq1_0", 54, { wt_encode_tq1_0($0, $1, $2) }, nil),
            ("tq2_0", 66, { wt_encode_tq2_0($0, $1, $2) }, nil),
        ]
        for (name, bytesPer256, encode, decode) in types {
            let (a, b) = bothPaths { () -> [UInt8] in
                var out = [UInt8](repeating: 0xAA, count: x.count / 256 * bytesPer256)
                x.withUnsafeBufferPointer { p in out.withUnsafeMutableBytes { encode(p.baseAddress!, x.count, $0.baseAddress!) } }
                return out
            }
            XCTAssertEqual(a, b, "\(name): the AVX2 and portable encoders differ")
            XCTAssertFalse(a.allSatisfy { $0 == 0xAA }, name)
            guard let decode else { continue }
            let (u, v) = bothPaths { () -> [UInt32] in
                var y = [Float](repeating: .nan, count: x.count)
                a.withUnsafeBytes { s in y.withUnsafeMutableBufferPointer { decode(s.baseAddress!, x.count, $0.baseAddress!) } }
                return y.map(\.bitPattern)
            }
            XCTAssertEqual(u, v, "\(name): the AVX2 and portable decoders differ")
        }
    }

    /// Blocks with a subnormal scale: no trap, an f16 scale of zero, and the codes ggml's compiled
    /// casts give (all zero for the 32-element types; trit 0 for the ternary ones).
    func testSubnormalScalesEncodeAsGGMLDoes() {
        let x = [Float](repeating: Float.leastNormalMagnitude / 117, count: 256)
        var q8 = [UInt8](repeating: 0xFF, count: 34 * 8), tq2 = [UInt8](repeating: 0xFF, count: 66)
        for allow: Int32 in [1, 0] {
            wt_quant_allow_avx2(allow)
            x.withUnsafeBufferPointer { p in q8.withUnsafeMutableBytes { wt_encode_q8_0(p.baseAddress!, 256, $0.baseAddress!) } }
            x.withUnsafeBufferPointer { p in tq2.withUnsafeMutableBytes { wt_encode_tq2_0(p.baseAddress!, 256, $0.baseAddress!) } }
            XCTAssertEqual(Array(q8[0..<34]), [UInt8](repeating: 0, count: 34))
            XCTAssertEqual(Array(tq2[0..<64]), [UInt8](repeating: 0b0101_0101, count: 64))   // code 1 = trit 0 in every slot
            XCTAssertEqual(Array(tq2[64..<66]), [0, 0])
        }
        wt_quant_allow_avx2(1)
    }

    func testFirstNonFiniteFindsTheFirstOne() {
        var x = [Float](repeating: 1, count: 1000)
        let (none, _) = bothPaths { x.withUnsafeBufferPointer { wt_first_nonfinite($0.baseAddress!, 1000) } }
        XCTAssertEqual(none, 1000)
        for (i, v) in [(999, Float.nan), (640, -Float.infinity), (33, Float.infinity), (0, -Float.nan)] {
            x[i] = v
            let (a, b) = bothPaths { x.withUnsafeBufferPointer { wt_first_nonfinite($0.baseAddress!, 1000) } }
            XCTAssertEqual(a, i)
            XCTAssertEqual(b, i)
        }
    }
}

/// The streamed RTN kernel (C) against `IntegerRTN` (the Swift statement of compressed-tensors'
/// rules, which the interop suite checks against numpy), on both C paths.
final class RTNKernelTests: XCTestCase {
    func testKernelMatchesIntegerRTNOnBothPaths() {
        let rows = 6, cols = 256
        var rng = SeededRNG(seed: 5, stream: "rtn kernel")
        var x = (0..<(rows * cols)).map { _ in Float(rng.nextGaussian()) * 0.02 }
        for i in 0..<cols { x[i] = 0 }                                 // an all-zero row: eps scales
        for i in stride(from: cols, to: 2 * cols, by: 5) { x[i] *= 300 }
        for i in (2 * cols)..<(2 * cols + 64) { x[i] = abs(x[i]) }     // runs with no negative value
        for (bits, run, symmetric) in [(4, 128, true), (4, 32, false), (8, 256, true), (8, 64, false), (3, 64, false), (2, 16, true), (5, 256, false), (6, 8, true)] {
            for dtype in [DType.F32, .BF16, .F16] {
                let q = TensorQuantizer(scheme: .integer(bits: bits), format: .compressedTensors, granularity: .group(run), symmetric: symmetric)
                let rtn = RTNStream(q, bits: bits, cols: cols, run: run, weightDType: dtype)!
                let ref = x.withUnsafeBufferPointer { IntegerRTN.quantize($0, runLength: run, bits: bits, symmetric: symmetric, scaleDType: rtn.scaleDType) }
                var refDecoded = [Float](repeating: 0, count: x.count)
                refDecoded.withUnsafeMutableBufferPointer { ref.dequantize(into: $0.baseAddress!) }
                roundInPlace(&refDecoded, to: rtn.scaleDType)
                let refPacked = CompressedTensorsLayout.pack(ref.q, rows: rows, cols: cols, bits: bits).map { UInt32(bitPattern: $0) }
                for allow: Int32 in [1, 0] {
                    wt_quant_allow_avx2(allow)
                    var scales = [Float](repeating: -1, count: rows * cols / run), zeros = scales
                    var packed = [UInt32](repeating: 0xFFFF_FFFF, count: rows * rtn.words), decoded = [Float](repeating: .nan, count: x.count)
                    x.withUnsafeBufferPointer { xp in
                        wt_rtn_rows(xp.baseAddress!, rows, cols, run, Int32(bits), symmetric ? 1 : 0, rtn.scaleKind, rtn.epsilon,
                                    &scales, &zeros, &packed, rtn.words, &decoded)
                    }
                    let what = "int\(bits) run \(run) \(symmetric ? "sym" : "asym") \(dtype) avx2 \(allow)"
                    XCTAssertEqual(scales.map(\.bitPattern), ref.scale.map(\.bitPattern), what)
                    XCTAssertEqual(zeros, ref.zero, what)
                    XCTAssertEqual(packed, refPacked, what)
                    XCTAssertEqual(decoded.map(\.bitPattern), refDecoded.map(\.bitPattern), what)
                }
                wt_quant_allow_avx2(1)
            }
        }
    }
}

/// The streamed row pruner (C), both paths, against `PruneMask.perRow` (the Swift rule) and the
/// generic path's sums, on bf16-like rows full of ties.
final class RowPruneKernelTests: XCTestCase {
    func testRowPrunerMatchesPerRowMasks() {
        // 301 and 37: ragged tails for the eight-lane compaction and the four-lane sums; 1500 and
        // 2051: long rows, whose selection is bracketed by a sample (checkRows makes one row's
        // sampled entries its largest, so the bracket misses there)
        // (300, 1500 and 1504 divide into groups of 4, 1504 of 8, 300 of 6)
        for cols in [300, 301, 37, 1500, 1504, 2051] { checkRows(cols: cols) }
        for cols in [1500, 1504, 2051] { checkRows(cols: cols, coarse: false) }   // distinct values: no tie hides an off-by-one
    }

    func checkRows(cols: Int, coarse: Bool = true) {
        let rows = 5
        var rng = SeededRNG(seed: 8, stream: "row prune \(cols)")
        // coarse: values on a grid, many equal magnitudes, so the tie rule decides
        var w = (0..<(rows * cols)).map { _ in coarse ? Float(Int(rng.nextGaussian() * 6)) / 8 : Float(rng.nextGaussian()) }
        w[3] = -0.0; w[cols + 7] = .nan
        if cols >= 1024 {   // the entries the selection samples (see select_kth in prune.c), made the largest of row 2
            for i in 0..<64 { w[2 * cols + (2 * i + 1) * cols / 128] = 100 }
        }
        let act = (0..<cols).map { Double($0 % 7) + 0.5 }
        // (k, wanda, N:M): N:M groups (nil: the k smallest per row) where cols divides into them
        var cases: [(Int, Bool, (n: Int, m: Int)?)] = [(cols / 2, false, nil), (0, false, nil), (cols, false, nil), (1, true, nil),
                                                        (cols - 1, true, nil), (cols * 3 / 10, true, nil)]
        if cols % 4 == 0 { cases += [(0, true, (n: 2, m: 4)), (0, false, (n: 1, m: 4)), (0, true, (n: 4, m: 4))] }
        if cols % 8 == 0 { cases += [(0, true, (n: 4, m: 8)), (0, false, (n: 2, m: 8))] }
        if cols % 6 == 0 { cases += [(0, true, (n: 3, m: 6))] }   // a group size with no vector path
        for (k, wanda, nm) in cases {
            let scale = wanda ? act.map { $0.squareRoot() } : nil
            let scores: [Float] = wanda ? w.indices.map { Float(Double(abs(w[$0])) * scale![$0 % cols]) } : w
            let expected = scores.withUnsafeBufferPointer { p in
                nm.map { PruneMask.nm(p, cols: cols, n: $0.n, m: $0.m) } ?? PruneMask.perRow(p, cols: cols, sparsity: Double(k) / Double(cols))
            }
            let rule = wt_row_rule(k: k, nm_keep: nm?.n ?? 0, nm_m: nm?.m ?? 0)
            func run(avx2: Int32) -> ([Float], wt_prune_tally) {
                wt_quant_allow_avx2(avx2)
                defer { wt_quant_allow_avx2(1) }
                var out = [Float](repeating: 1, count: w.count)
                var scratch = [Double](repeating: 0, count: wt_prune_rows_scratch_bytes(cols, 0) / 8 + 1)
                var tally = wt_prune_tally()
                w.withUnsafeBufferPointer { wp in
                    out.withUnsafeMutableBytes { o in
                        if let scale {
                            scale.withUnsafeBufferPointer { s in act.withUnsafeBufferPointer { a in
                                wt_prune_rows(wp.baseAddress!, wp.baseAddress!, 4, rows, cols, rule, s.baseAddress!, a.baseAddress!, nil, nil,
                                              o.baseAddress!, &scratch, &tally)
                            } }
                        } else {
                            wt_prune_rows(wp.baseAddress!, wp.baseAddress!, 4, rows, cols, rule, nil, nil, nil, nil, o.baseAddress!, &scratch, &tally)
                        }
                    }
                }
                return (out, tally)
            }
            let (out, tally) = run(avx2: 1), (portableOut, portable) = run(avx2: 0)
            XCTAssertEqual(out.map(\.bitPattern), portableOut.map(\.bitPattern), "k \(k) wanda \(wanda) nm \(String(describing: nm)): the two paths differ")
            XCTAssertEqual(tally.w_sq.bitPattern, portable.w_sq.bitPattern)
            XCTAssertEqual(tally.removed_sq.bitPattern, portable.removed_sq.bitPattern)
            XCTAssertEqual(tally.out_num.bitPattern, portable.out_num.bitPattern)
            let expectedOut = w.indices.map { expected[$0] ? Float(0) : w[$0] }
            XCTAssertEqual(out.map(\.bitPattern), expectedOut.map(\.bitPattern), "k \(k) wanda \(wanda) nm \(String(describing: nm))")
            XCTAssertEqual(tally.pruned, expected.filter { $0 }.count)
            XCTAssertEqual(tally.zeros, w.indices.filter { expected[$0] || w[$0] == 0 }.count)
            let removed = w.indices.filter { expected[$0] }.reduce(0.0) { $0 + Double(w[$1]) * Double(w[$1]) }
            if removed.isFinite { XCTAssertEqual(tally.removed_sq, removed, accuracy: 1e-9 * max(1, removed)) }
        }
    }
}

/// N:4 pruning of 16-bit storage: the AVX2 path against the portable one (which states the rule),
/// on both formats, with ties, signed zeros, infinities and NaN.
final class HalfNMKernelTests: XCTestCase {
    func testBothPathsGiveTheSameBytesAndCounts() {
        var rng = SeededRNG(seed: 9, stream: "n4")
        for dtype in [DType.BF16, .F16] {
            var values = (0..<1000).map { _ in Float(Int(rng.nextGaussian() * 4)) / 4 }   // coarse: ties
            values[1] = -0.0; values[6] = .infinity; values[9] = -.infinity; values[13] = .nan; values[600] = .nan
            var bits = [UInt16](repeating: 0, count: values.count)
            values.withUnsafeBufferPointer { v in bits.withUnsafeMutableBytes { Codec.encode(v.baseAddress!, count: v.count, as: dtype, into: $0.baseAddress!) } }
            var all = (0..<32768).map { UInt16($0) }, mags = [Float](repeating: 0, count: 32768)
            Codec.decode(dtype, &all, count: 32768, into: &mags)
            let square = mags.map { $0.isFinite ? Double($0) * Double($0) : 0 }
            for keep: Int32 in [1, 2, 3] {
                var results: [([UInt16], wt_prune_tally)] = []
                for allow: Int32 in [1, 0] {
                    wt_quant_allow_avx2(allow)
                    var out = [UInt16](repeating: 0xFFFF, count: bits.count), t = wt_prune_tally()
                    wt_prune_n4_half(bits, bits.count, keep, dtype == .BF16 ? 1 : 0, square, &out, &t)
                    results.append((out, t))
                }
                wt_quant_allow_avx2(1)
                let (a, ta) = results[0], (b, tb) = results[1]
                XCTAssertEqual(a, b, "\(dtype) keep \(keep)")
                XCTAssertEqual(ta.pruned, tb.pruned); XCTAssertEqual(ta.zeros, tb.zeros)
                XCTAssertEqual(ta.pruned, bits.count / 4 * Int(4 - keep))
                XCTAssertEqual(ta.w_sq, tb.w_sq, accuracy: 1e-9 * tb.w_sq)
                XCTAssertEqual(ta.removed_sq, tb.removed_sq, accuracy: 1e-9 * max(1, tb.removed_sq))
                // every pruned entry is +0.0 (all-zero bits), never -0.0
                XCTAssertGreaterThanOrEqual(b.filter { $0 == 0 }.count, Int(ta.pruned))
                XCTAssertEqual(zip(bits, b).filter { $0 != $1 && $1 != 0 }.count, 0)
            }
        }
    }
}

/// The error sums every quantize job reports: the AVX2 path against the portable one, with
/// non-finite references and approximations, across the 512-step runs and the scalar tail.
final class ErrorKernelTests: XCTestCase {
    func testBothPathsSumAlike() {
        var rng = SeededRNG(seed: 10, stream: "error sums")
        let n = 8 * 512 * 2 + 37
        var ref = (0..<n).map { _ in Float(rng.nextGaussian()) }
        var got = ref.map { $0 + Float(rng.nextGaussian()) * 0.01 }
        ref[5] = .infinity; ref[100] = .nan; got[200] = .nan; got[300] = -.infinity; ref[n - 1] = .nan
        var sums: [ErrorAccumulator] = []
        for allow: Int32 in [1, 0] {
            wt_quant_allow_avx2(allow)
            var e = ErrorAccumulator()
            e.add(ref, got, count: n)
            sums.append(e)
        }
        wt_quant_allow_avx2(1)
        XCTAssertEqual(sums[0].errSq.bitPattern, sums[1].errSq.bitPattern)
        XCTAssertEqual(sums[0].refSq.bitPattern, sums[1].refSq.bitPattern)
        XCTAssertEqual(sums[0].maxAbs, .infinity)   // a finite reference approximated by NaN
        XCTAssertEqual(sums[0].count, n - 1)          // the tail's NaN reference is not counted
        // finite parts only: the error norm is what numpy would give, to f32 summation accuracy
        var exact = 0.0
        for i in 0..<n where ref[i].isFinite && got[i].isFinite { exact += Double(got[i] - ref[i]) * Double(got[i] - ref[i]) }
        got[200] = ref[200]; got[300] = ref[300]
        var finite = ErrorAccumulator()
        finite.add(ref, got, count: n)
        XCTAssertEqual(finite.errSq, exact, accuracy: 1e-5 * exact)
    }
}
