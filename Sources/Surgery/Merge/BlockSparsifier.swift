import CMerge
import Linalg

/// One delta's sparsifier, decided once for the whole tensor and then applied block by block, in
/// index order: TIES's top-k becomes a magnitude threshold plus how many entries equal to it are
/// still kept; breadcrumbs' middle slice of the magnitude order becomes two rank cut-offs; DARE and
/// DELLA carry their random stream from block to block. So a tensor too large to hold decoded
/// gives, block by block, the bits the whole-tensor pipeline gives.
struct BlockSparsifier {
    /// The entries equal to a cut-off magnitude take consecutive ranks in index order
    /// (`below` + how many of them came before).
    struct Cut {
        let bits: UInt32
        let below: Int
        var seen = 0
    }

    enum Rule {
        case keepAll
        case dropAll
        /// Keep magnitudes above `threshold`, and the first `ties` equal to it.
        case topK(threshold: UInt32, ties: Int)
        /// Drop ranks (ascending magnitude, ties by index) below `bottomRank` and from `topRank` on.
        case middle(bottom: Cut?, bottomRank: Int, top: Cut?, topRank: Int)
        case random(density: Double, scale: Float)
        case della(density: Double, epsilon: Double, inverse: Bool, rowLength: Int)
    }

    private(set) var rule: Rule
    private var rng: SeededRNG
    /// mergekit's L1 rescale: the caller sums |delta| before and after and applies `l1Factor`.
    let rescalesL1: Bool

    /// DELLA's row length for a tensor of `shape`: the first dimension indexes rows; 1-D is one row.
    static func rowLength(_ shape: [Int], count n: Int) -> Int {
        shape.count >= 2 && shape[0] > 0 ? n / shape[0] : max(1, n)
    }

    /// - Parameters:
    ///   - blocks: calls its argument with the delta's blocks in order; called once per selection
    ///     pass (one or three for TIES, two or six for breadcrumbs, none for the random sparsifiers).
    ///   - sample: reads a run of the delta's entries (the selections' bracketing sample).
    init(_ kind: Sparsifier, count n: Int, rowLength: Int, density: Double, gamma: Double, epsilon: Double, rescale: RescaleRule?,
         rng: SeededRNG, tensor: String, sample: Sparsifier.SampleReader, blocks: ((UnsafeBufferPointer<Float>) -> Void) -> Void) throws {
        self.rng = rng
        var scratch = [Int](repeating: 0, count: 2048)
        func select(_ k: Int) -> (value: Float, greater: Int, equal: Int) {
            Sparsifier.selectMagnitude(k, count: n, scratch: &scratch, sample: sample, blocks: blocks)
        }
        func cut(rank r: Int) -> Cut {   // the magnitude at ascending rank r (0 <= r < n)
            let s = select(n - r)
            return Cut(bits: s.value.bitPattern, below: n - s.greater - s.equal)
        }
        rescalesL1 = density < 1 && rescale == .l1 && (kind == .random || kind == .dellaMagprune)
        if density >= 1 || n == 0 { rule = .keepAll; return }
        switch kind {
        case .magnitude:
            let k = Int(density * Double(n))
            if k >= n { rule = .keepAll } else if k <= 0 { rule = .dropAll } else {
                let s = select(k)
                rule = .topK(threshold: s.value.bitPattern, ties: k - s.greater)
            }
        case .magnitudeOutliers:
            // Keep the middle of the |delta| order: drop the gamma*N largest and the rest of the
            // (1 - density) from the smallest. mergekit's slice [bot:-top] is empty when top = 0
            // and zeroes the whole delta; here top = 0 keeps everything above the bottom.
            let keepN = Int(density * Double(n))
            var top = Int(gamma * Double(n))
            var bot = n - keepN - top
            if bot < 0 { top += bot; bot = 0 }
            if bot >= n || top >= n { rule = .dropAll; return }
            rule = .middle(bottom: bot > 0 ? cut(rank: bot) : nil, bottomRank: bot, top: top > 0 ? cut(rank: n - top) : nil, topRank: n - top)
        case .random:
            rule = density > 0 ? .random(density: density, scale: rescale == .inverseDensity ? Float(1 / density) : 1) : .dropAll
        case .dellaMagprune:
            guard density > 0 else { rule = .dropAll; return }
            guard density - epsilon > 0, density + epsilon < 1 else {
                throw UsageError("della: needs 0 < density - epsilon and density + epsilon < 1 (density \(density), epsilon \(epsilon)) for '\(tensor)'")
            }
            rule = .della(density: density, epsilon: epsilon, inverse: rescale == .inverseDensity, rowLength: rowLength)
        }
    }

    /// The rule as a magnitude cut, when it is one (top-k, keep-all, drop-all): keep magnitudes
    /// above `threshold` and the next `ties` equal to it (`TaskArithmeticPipeline.tiesBlock`
    /// applies it fused with the election, and keeps count of the ties).
    var cut: (threshold: UInt32, ties: Int)? {
        switch rule {
        case .keepAll: return (0, Int.max)
        case .dropAll: return (0x7FFF_FFFF, 0)
        case let .topK(t, ties): return (t, ties)
        default: return nil
        }
    }

    /// mergekit's L1 rescale factor (Σ|original| / Σ|kept|), unless either sum is below 1e-7.
    static func l1Factor(original b: Double, kept a: Double) -> Float? {
        b >= 1e-7 && a >= 1e-7 ? Float(b / a) : nil
    }

    /// Sparsifies the next block (blocks come in index order; DELLA's hold whole rows) in place and
    /// returns how many of its entries were kept.
    mutating func apply(_ p: UnsafeMutablePointer<Float>, count: Int) -> Int {
        switch rule {
        case .keepAll:
            return count
        case .dropAll:
            p.update(repeating: 0, count: count)
            return 0
        case let .topK(t, ties):
            var left = ties
            let kept = BlockSparsifier.keepAbove(p, count: count, threshold: t, ties: &left)
            rule = .topK(threshold: t, ties: left)
            return kept
        case .middle(var bottom, let bottomRank, var top, let topRank):
            var kept = 0
            for i in 0..<count {
                let b = p[i].bitPattern & 0x7FFF_FFFF
                var drop = false
                if var c = bottom {
                    if b < c.bits { drop = true } else if b == c.bits { drop = c.below + c.seen < bottomRank; c.seen += 1; bottom = c }
                }
                if var c = top {
                    if b > c.bits { drop = true } else if b == c.bits { drop = drop || c.below + c.seen >= topRank; c.seen += 1; top = c }
                }
                if drop { p[i] = 0 } else { kept += 1 }
            }
            rule = .middle(bottom: bottom, bottomRank: bottomRank, top: top, topRank: topRank)
            return kept
        case let .random(density, scale):
            return rng.withState { Int(wt_dare_drop(p, count, $0, density, scale)) }
        case let .della(density, epsilon, inverse, cols):
            // Rows of `cols` entries (a shorter last row has its own probabilities): the keep
            // probability is linear in the magnitude rank within the row.
            var kept = 0, lo = 0
            var table: [Double] = [], scratch: UnsafeMutableRawPointer? = nil
            defer { scratch?.deallocate() }
            // Draws come in bulk, whole rounds of the lanes (a fraction of the cost of one at a
            // time), for whole rows: draws[0 ..< have] are those of entries first ..< first + have.
            // Room for a row and a round (under 128 KiB for rows up to 16k: the heap, not mmap).
            let round = Int(WT_RNG_ROUND)
            let capacity = min(count, cols + round)
            let draws = UnsafeMutablePointer<UInt32>.allocate(capacity: max(1, capacity))
            defer { draws.deallocate() }
            var first = 0, have = 0
            while lo < count {
                let len = min(count, lo + cols) - lo
                if lo + len > first + have {
                    // keep the drawn ones not yet used, then the next draws of the stream: the rest
                    // of the block when it fits, else whole rounds (at least one: room > a round)
                    let left = first + have - lo
                    draws.update(from: draws + (lo - first), count: left)
                    let want = count - lo - left, room = capacity - left
                    let more = want <= room ? want : room / round * round
                    rng.withState { wt_rng_draws24($0, draws + left, more) }
                    first = lo
                    have = left + more
                }
                if table.count != len {
                    table = BlockSparsifier.dellaProbabilities(count: len, density: density, epsilon: epsilon)
                    scratch?.deallocate()
                    scratch = UnsafeMutableRawPointer.allocate(byteCount: wt_della_scratch_bytes(len), alignment: 64)
                    wt_della_scratch_clear(scratch)
                }
                kept += Int(wt_della_row(p + lo, len, draws + (lo - first), table, inverse ? 1 : 0, scratch))
                lo += len
            }
            return kept
        }
    }

    /// DELLA's keep probability by ascending magnitude rank in a row of `count` entries:
    /// density - epsilon at the smallest to density + epsilon at the largest (density alone for one entry).
    static func dellaProbabilities(count: Int, density: Double, epsilon: Double) -> [Double] {
        guard count > 1 else { return [Double](repeating: density, count: count) }
        return (0..<count).map { rank in min(1, max(0, (density - epsilon) + 2 * epsilon * Double(rank) / Double(count - 1))) }
    }

    /// Zeroes magnitudes at or below `t` except the first `ties` equal to it (counted down): CMerge's
    /// wt_keep_above, eight lanes at a time on the bit patterns (real deltas make every scalar
    /// branch a coin flip).
    private static func keepAbove(_ p: UnsafeMutablePointer<Float>, count n: Int, threshold t: UInt32, ties: inout Int) -> Int {
        var left = ties
        let kept = Int(wt_keep_above(p, n, t, &left))
        ties = left
        return kept
    }
}
