import CMerge

/// Reductions over f32 data with f64 accumulation (fixed order for a fixed length, so results do
/// not depend on threads), and the element-wise helpers the methods share.
enum VectorMath {
    static func dot(_ a: [Float], _ b: [Float]) -> Double {
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in dot(pa.baseAddress!, pb.baseAddress!, pa.count) }
        }
    }

    static func dot(_ pa: UnsafePointer<Float>, _ pb: UnsafePointer<Float>, _ n: Int) -> Double {
        let ra = UnsafeRawPointer(pa), rb = UnsafeRawPointer(pb)
        var s = SIMD4<Double>()
        var i = 0
        while i + 4 <= n {
            s += SIMD4<Double>(ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self))
                * SIMD4<Double>(rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self))
            i += 4
        }
        var r = s.sum()
        while i < n { r += Double(pa[i]) * Double(pb[i]); i += 1 }
        return r
    }

    static func norm(_ a: [Float]) -> Double { dot(a, a).squareRoot() }
    static func sumAbs(_ a: [Float]) -> Double {
        var s = AbsSum(count: a.count)
        a.withUnsafeBufferPointer { if let p = $0.baseAddress { s.add(p, count: a.count, at: 0) } }
        return s.total
    }

    /// A sum over a vector of `count` entries that arrives in blocks, with the association of the
    /// one-piece reductions here (`dot`, `sumAbs`): entry i goes to f64 lane i mod 4 below the last
    /// multiple of 4, the rest is added one by one after the lanes. So a tensor reduced block by
    /// block gives the same bits as reduced whole, wherever the blocks start.
    struct LaneSum {
        private var lanes = SIMD4<Double>()
        private var tail: [Double] = []
        private let body: Int
        init(count: Int) { body = count & ~3 }

        /// Adds terms `start ..< start + count`: `four(i)` gives the block's terms i ..< i + 4, `one(i)` term i.
        @inline(__always)
        mutating func add(count: Int, at start: Int, four: (Int) -> SIMD4<Double>, one: (Int) -> Double) {
            var i = 0
            while i < count && (start + i) & 3 != 0 && start + i < body { lanes[(start + i) & 3] += one(i); i += 1 }
            while i + 4 <= count && start + i + 4 <= body { lanes += four(i); i += 4 }
            while i < count {
                if start + i < body { lanes[(start + i) & 3] += one(i) } else { tail.append(one(i)) }
                i += 1
            }
        }

        /// The same sum with the aligned middle done by `quads(i, q, lanes)`, which adds the
        /// block's terms i ..< i + 4q to the four lanes (term i + 4r + j to lane j): C kernels.
        @inline(__always)
        mutating func add(count: Int, at start: Int, one: (Int) -> Double,
                          quads: (_ i: Int, _ quads: Int, _ lanes: UnsafeMutablePointer<Double>) -> Void) {
            var i = 0
            while i < count && (start + i) & 3 != 0 && start + i < body { lanes[(start + i) & 3] += one(i); i += 1 }
            let q = max(0, min(count - i, body - start - i) / 4)
            if q > 0 {
                let from = i
                withUnsafeMutableBytes(of: &lanes) { quads(from, q, $0.baseAddress!.assumingMemoryBound(to: Double.self)) }
                i += 4 * q
            }
            while i < count {
                if start + i < body { lanes[(start + i) & 3] += one(i) } else { tail.append(one(i)) }
                i += 1
            }
        }

        var total: Double { tail.reduce(lanes.sum(), +) }
    }

    /// Σ|x| block by block (see LaneSum).
    struct AbsSum {
        private var sum: LaneSum
        init(count: Int) { sum = LaneSum(count: count) }
        mutating func add(_ p: UnsafePointer<Float>, count: Int, at start: Int) {
            sum.add(count: count, at: start, one: { Double(abs(p[$0])) }, quads: { i, q, lanes in wt_abs_lanes(p + i, q, lanes) })
        }
        var total: Double { sum.total }
    }

    /// Σ a·b block by block (see LaneSum): the bits of `dot` over the whole vectors.
    struct DotSum {
        private var sum: LaneSum
        init(count: Int) { sum = LaneSum(count: count) }
        mutating func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int, at start: Int) {
            let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
            sum.add(count: count, at: start, four: { i in
                SIMD4<Double>(ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self))
                    * SIMD4<Double>(rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self))
            }, one: { Double(a[$0]) * Double(b[$0]) })
        }
        var total: Double { sum.total }
    }

    /// a - b
    static func sub(_ a: [Float], _ b: [Float]) -> [Float] {
        [Float](unsafeUninitializedCapacity: a.count) { out, done in
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    for i in 0..<pa.count { out[i] = pa[i] - pb[i] }
                }
            }
            done = a.count
        }
    }

    /// Σ c_i x_i, accumulated in f64 per element.
    static func combine(_ xs: [[Float]], _ c: [Double], count: Int) -> [Float] {
        let ptrs = xs.map { $0.withUnsafeBufferPointer { $0.baseAddress! } }
        return withExtendedLifetime(xs) {
            [Float](unsafeUninitializedCapacity: count) { out, done in
                combine(ptrs, c, count: count, into: out.baseAddress!)
                done = count
            }
        }
    }

    /// The same over pointers (blocks of streamed tensors get the same bits).
    static func combine(_ ptrs: [UnsafePointer<Float>], _ c: [Double], count: Int, into out: UnsafeMutablePointer<Float>) {
        let M = ptrs.count
        if M == 2 {
            let (p0, p1, c0, c1) = (ptrs[0], ptrs[1], c[0], c[1])
            for i in 0..<count { out[i] = Float(c0 * Double(p0[i]) + c1 * Double(p1[i])) }
        } else {
            for i in 0..<count {
                var s = 0.0
                for m in 0..<M { s += c[m] * Double(ptrs[m][i]) }
                out[i] = Float(s)
            }
        }
    }

    /// ‖x_i - b‖ for each i and <x_i - b, x_j - b> for each pair i < j, in one pass, no copies.
    static func deltaGeometry(_ xs: [[Float]], base: [Float]) -> (norms: [Double], dots: [Double]) {
        let ptrs = xs.map { $0.withUnsafeBufferPointer { $0.baseAddress! } }
        let g = withExtendedLifetime(xs) {
            base.withUnsafeBufferPointer { deltaSums(ptrs, base: $0.baseAddress!, count: $0.count) }
        }
        return (g.squares.map { $0.squareRoot() }, g.dots)
    }

    /// Σ (x_i - b)² for each i and Σ (x_i - b)(x_j - b) for each pair i < j (pairs in order (0,1),
    /// (0,2), ..., (1,2), ...): sums, so blocks of a tensor can be added up.
    static func deltaSums(_ ptrs: [UnsafePointer<Float>], base: UnsafePointer<Float>, count n: Int) -> (squares: [Double], dots: [Double]) {
        let M = ptrs.count
        var sq = [Double](repeating: 0, count: 4 * M), dots = [Double](repeating: 0, count: 2 * M * (M - 1))
        wt_delta_lanes(ptrs.map { Optional($0) }, M, base, n / 4, &sq, &dots)
        return laneTotals(sq, dots, tail: tailDeltas(ptrs, base: base, count: n))
    }

    /// `deltaSums` of models' blocks that also subtracts the base from them (in f32) in the same pass.
    static func deltaSumsSubtracting(_ ptrs: [UnsafeMutablePointer<Float>], base: UnsafePointer<Float>, count n: Int) -> (squares: [Double], dots: [Double]) {
        let M = ptrs.count
        let tail = tailDeltas(ptrs.map { UnsafePointer($0) }, base: base, count: n)   // before the subtraction
        var sq = [Double](repeating: 0, count: 4 * M), dots = [Double](repeating: 0, count: 2 * M * (M - 1))
        wt_delta_lanes_subtract(ptrs.map { Optional($0) }, M, base, n, &sq, &dots)
        return laneTotals(sq, dots, tail: tail)
    }

    /// The deltas (f64) of the entries after the last multiple of 4, which the lanes leave out.
    static func tailDeltas(_ ptrs: [UnsafePointer<Float>], base: UnsafePointer<Float>, count n: Int) -> [[Double]] {
        ((n & ~3)..<n).map { j in ptrs.map { Double($0[j]) - Double(base[j]) } }
    }

    /// Each quantity's four lanes added (lane 0 to 3), then the tail's terms in index order.
    static func laneTotals(_ sq: [Double], _ dots: [Double], tail: [[Double]]) -> (squares: [Double], dots: [Double]) {
        func lanes(_ a: [Double], _ k: Int) -> Double { SIMD4(a[4 * k], a[4 * k + 1], a[4 * k + 2], a[4 * k + 3]).sum() }
        let M = sq.count / 4, P = dots.count / 4
        var squares = (0..<M).map { lanes(sq, $0) }, pair = (0..<P).map { lanes(dots, $0) }
        for dj in tail {
            var k = 0
            for p in 0..<M {
                squares[p] += dj[p] * dj[p]
                for q in (p + 1)..<max(p + 1, M) { pair[k] += dj[p] * dj[q]; k += 1 }
            }
        }
        return (squares, pair)
    }

    /// out += base (f32) and, in the same pass, ||out - base||² (the new out) and ||base||², each
    /// summed as `deltaSums` and `dot` sum them.
    static func addBase(_ out: UnsafeMutablePointer<Float>, _ base: UnsafePointer<Float>, count n: Int) -> (change: Double, baseSquares: Double) {
        var change = [Double](repeating: 0, count: 4), squares = change
        wt_add_base(out, base, n, &change, &squares)
        return addBaseTotals(change: change, squares: squares, out, base, count: n)
    }

    /// `addBase`'s sums from its four lanes (the first 4 * (n / 4) entries) and the last n mod 4
    /// entries of the new out and the base, in index order.
    static func addBaseTotals(change: [Double], squares: [Double], _ out: UnsafePointer<Float>, _ base: UnsafePointer<Float>,
                              count n: Int) -> (change: Double, baseSquares: Double) {
        var c = SIMD4(change[0], change[1], change[2], change[3]).sum(), b = SIMD4(squares[0], squares[1], squares[2], squares[3]).sum()
        for j in (n & ~3)..<n {
            let d = Double(out[j]) - Double(base[j])
            c += d * d
            b += Double(base[j]) * Double(base[j])
        }
        return (c, b)
    }

    /// ‖a - b‖ without a copy.
    static func distance(_ a: [Float], _ b: [Float]) -> Double {
        deltaGeometry([a], base: b).norms[0]
    }

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        let na = norm(a), nb = norm(b)
        return na > 0 && nb > 0 ? dot(a, b) / (na * nb) : .nan
    }
}
