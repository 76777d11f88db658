import SafeTensors
/// SCE: select the entries where the models' deltas vary most, weight each model by its delta's
/// energy, elect signs as TIES does, and average the agreeing deltas.
struct SCEMerge: MergeMethod {
    let name = "sce"
    let base = BaseRole.required
    let modelCount = 1...Int.max
    let globalParameters = [ParameterSpec("select_topk", .number(1), "fraction of entries (by variance across models) to keep", range: 0...1),
                            ParameterSpec("int8_mask", .bool(false), "accepted for mergekit compatibility; no numeric effect")]
    let modelParameters: [ParameterSpec] = []

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        let base = c.base!
        let n = c.count, M = c.models.count
        var T = c.models.map { VectorMath.sub($0, base) }
        let topk = c.number("select_topk")
        if topk < 1 {
            var variance = [Float](repeating: 0, count: n)
            T.withPointers { t in variance.withUnsafeMutableBufferPointer { SCEMerge.variance(t, count: n, into: $0.baseAddress!) } }
            let nonzero = variance.filter { $0 != 0 }.count
            let keep = Sparsifier.topK(variance, Int(Double(nonzero) * topk))
            for m in 0..<M { for i in 0..<n where !keep[i] { T[m][i] = 0 } }
        }
        let energy = T.map { VectorMath.dot($0, $0) / Double(max(1, n)) }
        let total = energy.reduce(0, +)
        let w = total < 1e-6 ? Array(repeating: 1 / Double(M), count: M) : energy.map { $0 / total }
        var out = [Float](repeating: 0, count: n)
        T.withPointers { t in
            base.withUnsafeBufferPointer { b in out.withUnsafeMutableBufferPointer { SCEMerge.signedAverage(t, weights: w, base: b.baseAddress!, count: n, into: $0.baseAddress!) } }
        }
        return MergeOutput(values: out, metrics: [("model_weights", .array(w.map { .double($0) }))])
    }

    /// Population variance across the models' deltas, per entry.
    static func variance(_ T: [UnsafePointer<Float>], count n: Int, into variance: UnsafeMutablePointer<Float>) {
        let M = T.count
        for i in 0..<n {
            var s = 0.0, sq = 0.0
            for m in 0..<M { let v = Double(T[m][i]); s += v; sq += v * v }
            let mean = s / Double(M)
            variance[i] = Float(max(0, sq / Double(M) - mean * mean))
        }
    }

    /// Per entry: the sign of the deltas' sum elected, the agreeing deltas averaged with the
    /// models' weights, added to the base.
    static func signedAverage(_ T: [UnsafePointer<Float>], weights w: [Double], base: UnsafePointer<Float>, count n: Int,
                              into out: UnsafeMutablePointer<Float>) {
        let M = T.count
        for i in 0..<n {
            var s = 0.0
            for m in 0..<M { s += Double(T[m][i]) }
            let positive = s >= 0
            var num = 0.0, den = 0.0
            for m in 0..<M {
                let v = Double(T[m][i])
                if (positive && v > 0) || (!positive && v < 0) { num += v * w[m]; den += w[m] }
            }
            out[i] = base[i] + Float(num / max(den, 1e-6))
        }
    }
}

extension Array where Element == [Float] {
    /// The arrays' base addresses, valid inside `body`.
    func withPointers<R>(_ body: ([UnsafePointer<Float>]) throws -> R) rethrows -> R {
        let ptrs = map { $0.withUnsafeBufferPointer { $0.baseAddress! } }
        return try withExtendedLifetime(self) { try body(ptrs) }
    }
}

extension SCEMerge: StreamedMergeMethod {
    /// Passes: count the entries of non-zero variance; select the top-k variance threshold (three
    /// radix passes); the models' energies over the kept entries (lane sums, as `dot`); the output.
    /// The kept set is the whole-tensor one: above the threshold, plus the first entries equal to it.
    func mergeStreamed(_ c: StreamedMergeContext, write: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws -> [(String, JSONValue)] {
        let M = c.models.count, n = c.count, topk = c.number("select_topk")
        let variance = UnsafeMutablePointer<Float>.allocate(capacity: max(1, c.blockLength))
        let out = UnsafeMutablePointer<Float>.allocate(capacity: max(1, c.blockLength))
        defer { variance.deallocate(); out.deallocate() }
        /// Deltas in place, and their population variance per entry.
        func prepare(_ base: UnsafeMutablePointer<Float>, _ T: [UnsafeMutablePointer<Float>], _ len: Int) {
            for m in 0..<M { for i in 0..<len { T[m][i] -= base[i] } }
            SCEMerge.variance(T.map { UnsafePointer($0) }, count: len, into: variance)
        }
        var keep: (threshold: UInt32, ties: Int)? = nil   // nil: keep everything
        var keepNone = false
        if topk < 1 {
            var nonzero = 0
            c.pass { _, len, base, T in prepare(base!, T, len); for i in 0..<len where variance[i] != 0 { nonzero += 1 } }
            let k = Int(Double(nonzero) * topk)
            if k <= 0 { keepNone = true } else if k < n {
                var scratch = [Int](repeating: 0, count: 2048)
                let s = Sparsifier.selectMagnitude(k, scratch: &scratch) { body in
                    c.pass { _, len, base, T in prepare(base!, T, len); body(UnsafeBufferPointer(start: variance, count: len)) }
                }
                keep = (s.value.bitPattern, k - s.greater)
            }
        }
        /// Zeroes the deltas of the entries not kept, replaying the tie budget in index order.
        func mask(_ T: [UnsafeMutablePointer<Float>], _ len: Int, _ ties: inout Int) {
            if keepNone { for m in 0..<M { T[m].update(repeating: 0, count: len) }; return }
            guard let (t, _) = keep else { return }
            for i in 0..<len {
                let b = variance[i].bitPattern & 0x7FFF_FFFF
                let kept = b > t || (b == t && ties > 0)
                if b == t && kept { ties -= 1 }
                if !kept { for m in 0..<M { T[m][i] = 0 } }
            }
        }
        var energy = (0..<M).map { _ in VectorMath.DotSum(count: n) }
        var ties = keep?.ties ?? 0
        c.pass { start, len, base, T in
            prepare(base!, T, len); mask(T, len, &ties)
            for m in 0..<M { energy[m].add(T[m], T[m], count: len, at: start) }
        }
        let e = energy.map { $0.total / Double(max(1, n)) }
        let total = e.reduce(0, +)
        let w = total < 1e-6 ? Array(repeating: 1 / Double(M), count: M) : e.map { $0 / total }
        ties = keep?.ties ?? 0
        try c.pass { start, len, base, T in
            prepare(base!, T, len); mask(T, len, &ties)
            SCEMerge.signedAverage(T.map { UnsafePointer($0) }, weights: w, base: base!, count: len, into: out)
            try write(start, UnsafeBufferPointer(start: out, count: len))
        }
        return [("model_weights", .array(w.map { .double($0) }))]
    }
}
