import CMerge
import Linalg

/// How kept entries are rescaled after random dropping (DARE, DELLA).
public enum RescaleRule: String, Sendable {
    /// mergekit's: scale the kept entries so the L1 norm of the delta is unchanged.
    case l1
    /// The DARE paper's: divide each kept entry by its keep probability.
    case inverseDensity = "inverse_density"
}

/// The sparsifiers of the task-arithmetic family (mergekit's sparsify.py, with its bugs fixed).
/// Each keeps a subset of a delta's entries and zeroes the rest; `kept` counts the survivors.
public enum Sparsifier: Sendable {
    case magnitude
    case magnitudeOutliers   // breadcrumbs
    case random              // DARE
    case dellaMagprune       // DELLA

    /// Sparsifies `delta` in place and returns how many entries were kept.
    /// - Parameters:
    ///   - shape: DELLA ranks within rows (the first dimension indexes rows; 1-D is one row).
    ///   - density: fraction to keep (>= 1 keeps everything).
    ///   - gamma: breadcrumbs' fraction of the largest entries to drop.
    ///   - epsilon: DELLA's spread of keep probabilities around the density.
    ///   - rescale: for the random sparsifiers, nil for none.
    ///   - rng: seeded per tensor and model by the caller.
    /// The whole delta is one block of `BlockSparsifier`, which does the work.
    func apply(_ delta: inout [Float], shape: [Int], density: Double, gamma: Double, epsilon: Double, rescale: RescaleRule?,
               rng: SeededRNG, tensor: String) throws -> Int {
        let n = delta.count
        return try delta.withUnsafeMutableBufferPointer { d in
            let whole = UnsafeBufferPointer(d)
            var s = try BlockSparsifier(self, count: n, rowLength: BlockSparsifier.rowLength(shape, count: n), density: density, gamma: gamma,
                                        epsilon: epsilon, rescale: rescale, rng: rng, tensor: tensor,
                                        sample: { start, count, into in into.update(from: d.baseAddress! + start, count: count) }) { body in body(whole) }
            guard n > 0 else { return 0 }
            var before = VectorMath.AbsSum(count: n), after = before
            if s.rescalesL1 { before.add(d.baseAddress!, count: n, at: 0) }
            let kept = s.apply(d.baseAddress!, count: n)
            if s.rescalesL1 {
                after.add(d.baseAddress!, count: n, at: 0)
                if let f = BlockSparsifier.l1Factor(original: before.total, kept: after.total) { for i in 0..<n { d[i] *= f } }
            }
            return kept
        }
    }

    /// Marks the k entries of largest magnitude (ties: lower index first), found by selecting the
    /// k-th largest magnitude, not by sorting.
    static func topK(_ x: [Float], _ k: Int) -> [Bool] {
        let n = x.count
        guard k < n else { return Array(repeating: true, count: n) }
        guard k > 0 else { return Array(repeating: false, count: n) }
        var out = [Bool](repeating: false, count: n + 8)
        x.withUnsafeBufferPointer { p in
            out.withUnsafeMutableBufferPointer { o in
                forEachKept(p, k) { i, keep in for l in 0..<8 { o[i + l] = keep[l] } }
            }
        }
        out.removeLast(8)
        return out
    }

    /// Calls `body(i, mask)` for blocks of 8 entries (the input padded with zeros past its end):
    /// the lanes of the k largest magnitudes, ties kept in index order. SIMD on the bit patterns
    /// (for magnitudes, integer order is float order), because real deltas make every scalar
    /// branch here a coin flip.
    private static func forEachKept(_ p: UnsafeBufferPointer<Float>, _ k: Int, _ body: (Int, SIMDMask<SIMD8<Int32>>) -> Void) {
        let n = p.count
        let t = kthLargestMagnitude(p, k).bitPattern
        let tv = SIMD8<UInt32>(repeating: t), signOff = SIMD8<UInt32>(repeating: 0x7FFF_FFFF)
        let blocks = (n + 7) / 8
        var tail = [UInt32](repeating: 0, count: 8)
        func block(_ b: Int) -> SIMD8<UInt32> {
            if b * 8 + 8 <= n { return UnsafeRawPointer(p.baseAddress!).loadUnaligned(fromByteOffset: 32 * b, as: SIMD8<UInt32>.self) & signOff }
            for l in 0..<8 { tail[l] = b * 8 + l < n ? p[b * 8 + l].bitPattern & 0x7FFF_FFFF : 0 }
            return SIMD8<UInt32>(tail)
        }
        var above = 0
        for b in 0..<blocks { above &+= Int(SIMD8<Int32>(repeating: 0).replacing(with: 1, where: block(b) .> tv).wrappedSum()) }
        var ties = k - above   // entries equal to t still to keep, in index order
        for b in 0..<blocks {
            let v = block(b)
            var keep = v .> tv
            let eq = v .== tv
            if any(eq) {
                for l in 0..<8 where eq[l] && ties > 0 { keep[l] = true; ties -= 1 }
            }
            // Blocks run into the padding only at the end, where b * 8 + l >= n: never kept (0 < t or ties spent).
            body(b * 8, keep)
        }
    }

    /// The k-th largest |x| (k >= 1), exactly, by radix selection on the bit patterns: for
    /// non-negative floats the bits order like the values, so three histogram passes (11, 10
    /// and 10 bits) find it in O(n) without sorting or moving data.
    static func kthLargestMagnitude(_ x: UnsafeBufferPointer<Float>, _ k: Int) -> Float {
        var scratch = [Int](repeating: 0, count: 2048)
        return kthLargestMagnitude(x, k, scratch: &scratch)
    }

    /// The same with a caller's 2048-entry histogram, for many small selections (rows).
    static func kthLargestMagnitude(_ x: UnsafeBufferPointer<Float>, _ k: Int, scratch hist: inout [Int]) -> Float {
        precondition(k >= 1 && k <= x.count && hist.count >= 2048)
        return selectMagnitude(k, scratch: &hist) { body in body(x) }.value
    }

    /// The k-th largest |x| (k >= 1) of data that arrives in blocks: `blocks` calls its argument
    /// once per block, in order, and is called once per radix pass (three), so a tensor too large
    /// to hold decoded can be decoded block by block each time. Also returns how many magnitudes
    /// are greater than the value and how many equal it (bit patterns: +0 and -0 are equal).
    /// - Parameter within: when every magnitude's bits are known to lie in `lo...hi` (`count` of
    ///   them), the passes whose digit all of them share are skipped.
    static func selectMagnitude(_ k: Int, scratch hist: inout [Int], within: (lo: UInt32, hi: UInt32, count: Int)? = nil,
                                blocks: ((UnsafeBufferPointer<Float>) -> Void) -> Void) -> (value: Float, greater: Int, equal: Int) {
        precondition(k >= 1 && hist.count >= 2048)
        var remaining = k
        var prefix: UInt32 = 0
        var equal = 0
        for (shift, width) in [(UInt32(20), UInt32(11)), (10, 10), (0, 10)] {
            let buckets = 1 << Int(width)
            let mask = UInt32(buckets - 1)
            if let w = within, w.lo >> shift == w.hi >> shift {
                // Every entry has this digit (and the prefix fixed so far): the pass would count them all there.
                prefix = prefix << width | (w.lo >> shift & mask)
                equal = w.count
                continue
            }
            let fixedShift = shift + width
            hist.withUnsafeMutableBufferPointer { h in
                h.baseAddress!.update(repeating: 0, count: buckets)
                blocks { x in
                    guard let base = x.baseAddress else { return }
                    wt_magnitude_histogram(base, x.count, shift, width, fixedShift >= 31 ? 0 : 1, prefix, h.baseAddress!)
                }
            }
            var digit = Int(mask)
            while hist[digit] < remaining { remaining -= hist[digit]; digit -= 1 }
            prefix = prefix << width | UInt32(digit)
            equal = hist[digit]   // after the last pass: every bit fixed, the count of exact equals
        }
        return (Float(bitPattern: prefix), k - remaining, equal)
    }

    /// Reads entries [start, start + count) of the data `selectMagnitude` selects from.
    typealias SampleReader = (_ start: Int, _ count: Int, _ into: UnsafeMutablePointer<Float>) -> Void

    /// `selectMagnitude` in one pass over the data instead of three: a sample of the entries
    /// (1024 runs of 16, evenly spaced) brackets the k-th largest magnitude, one pass counts the
    /// magnitudes above the bracket and keeps those inside it, and the radix selection finishes on
    /// those few. The answer is the same exact value; when the bracket misses it, or holds far more
    /// entries than a sample predicts (heavy ties), the three-pass selection runs instead.
    static func selectMagnitude(_ k: Int, count n: Int, scratch hist: inout [Int], sample: SampleReader,
                                blocks: ((UnsafeBufferPointer<Float>) -> Void) -> Void) -> (value: Float, greater: Int, equal: Int) {
        precondition(k >= 1 && k <= n)
        let runs = 1024, run = 16, S = runs * run
        guard n >= 16 * S else { return selectMagnitude(k, scratch: &hist, blocks: blocks) }
        var sampled = [UInt32](repeating: 0, count: S)
        sampled.withUnsafeMutableBufferPointer { bits in
            bits.withMemoryRebound(to: Float.self) { f in
                for r in 0..<runs { sample(r * (n - run) / (runs - 1), run, f.baseAddress! + r * run) }
            }
        }
        for i in 0..<S { sampled[i] &= 0x7FFF_FFFF }
        sampled.sort(by: >)
        // The k-th largest sits near sample rank k S / n; the margin is 6 binomial deviations
        // plus two runs (neighbours in a run are not independent draws).
        let q = Double(k) / Double(n), at = Int(q * Double(S))
        let margin = Int(6 * (Double(S) * q * (1 - q)).squareRoot()) + 2 * run
        let hi: UInt32 = at - margin <= 0 ? UInt32.max : sampled[at - margin]
        let lo: UInt32 = at + margin >= S ? 0 : sampled[at + margin]
        // Room for four times the entries the sample puts inside (uninitialised: only what is written is read).
        let cap = 4 * (2 * margin + 1) * (n / S + 1) + 4096
        let inside = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: cap + 8)
        defer { inside.deallocate() }
        var above = 0, count = 0
        blocks { x in
            guard let p = x.baseAddress else { return }
            var a = 0
            count += Int(wt_bracket(p, x.count, lo, hi, inside.baseAddress! + min(count, cap), max(0, cap - count), &a))
            above += a
        }
        guard count <= cap, above < k, k <= above + count else { return selectMagnitude(k, scratch: &hist, blocks: blocks) }
        let r = UnsafeRawPointer(inside.baseAddress!).withMemoryRebound(to: Float.self, capacity: count) { f in
            selectMagnitude(k - above, scratch: &hist, within: (lo, hi, count)) { body in body(UnsafeBufferPointer(start: f, count: count)) }
        }
        return (r.value, above + r.greater, r.equal)
    }
}
