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
    func apply(_ delta: inout [Float], shape: [Int], density: Double, gamma: Double, epsilon: Double, rescale: RescaleRule?,
               rng: inout SeededRNG, tensor: String) throws -> Int {
        let n = delta.count
        if density >= 1 { return n }
        let l1 = rescale == .l1 ? VectorMath.sumAbs(delta) : 0
        switch self {
        case .magnitude:
            let k = Int(density * Double(n))
            Sparsifier.keepTopK(&delta, k)
            return k
        case .magnitudeOutliers:
            // Keep the middle of the |delta| order: drop the gamma*N largest and the rest of the
            // (1 - density) from the smallest. mergekit's slice [bot:-top] is empty when top = 0
            // and zeroes the whole delta; here top = 0 keeps everything above the bottom.
            let keepN = Int(density * Double(n))
            var top = Int(gamma * Double(n))
            var bot = n - keepN - top
            if bot < 0 { top += bot; bot = 0 }
            let order = Sparsifier.ascendingMagnitudeOrder(delta)
            for r in 0..<bot { delta[order[r]] = 0 }
            for r in (n - top)..<n { delta[order[r]] = 0 }
            return n - top - bot
        case .random:
            guard density > 0 else { Sparsifier.zero(&delta); return 0 }
            var kept = 0
            let scale = rescale == .inverseDensity ? Float(1 / density) : 1
            for i in 0..<n {
                if Double(rng.nextUnitFloat()) < density { delta[i] *= scale; kept += 1 } else { delta[i] = 0 }
            }
            if rescale == .l1 { Sparsifier.rescaleL1(&delta, originalL1: l1) }
            return kept
        case .dellaMagprune:
            guard density > 0 else { Sparsifier.zero(&delta); return 0 }
            guard density - epsilon > 0, density + epsilon < 1 else {
                throw UsageError("della: needs 0 < density - epsilon and density + epsilon < 1 (density \(density), epsilon \(epsilon)) for '\(tensor)'")
            }
            // Per row (a 1-D tensor is one row): keep probability linear in the magnitude rank.
            let cols = shape.count >= 2 && shape[0] > 0 ? n / shape[0] : max(1, n)
            var kept = 0
            var lo = 0
            while lo < n {
                let hi = min(n, lo + cols)
                let order = Sparsifier.ascendingMagnitudeOrder(Array(delta[lo..<hi]))
                var p = [Double](repeating: density, count: hi - lo)
                if p.count > 1 {
                    for (rank, idx) in order.enumerated() {
                        p[idx] = min(1, max(0, (density - epsilon) + 2 * epsilon * Double(rank) / Double(p.count - 1)))
                    }
                }
                for j in 0..<p.count {
                    if Double(rng.nextUnitFloat()) < p[j] {
                        if rescale == .inverseDensity { delta[lo + j] = Float(Double(delta[lo + j]) / p[j]) }
                        kept += 1
                    } else {
                        delta[lo + j] = 0
                    }
                }
                lo = hi
            }
            if rescale == .l1 { Sparsifier.rescaleL1(&delta, originalL1: l1) }
            return kept
        }
    }

    static func zero(_ x: inout [Float]) { x.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }

    /// m * (Σ|original| / Σ|m|), unless either sum is below 1e-7 (mergekit's guard).
    static func rescaleL1(_ m: inout [Float], originalL1 b: Double) {
        let a = VectorMath.sumAbs(m)
        guard b >= 1e-7, a >= 1e-7 else { return }
        let s = Float(b / a)
        for i in m.indices { m[i] *= s }
    }

    /// Zeroes all but the k entries of largest magnitude, in place (ties: lower index first).
    static func keepTopK(_ x: inout [Float], _ k: Int) {
        let n = x.count
        guard k < n else { return }
        x.withUnsafeMutableBufferPointer { p in
            guard k > 0 else { for i in 0..<n { p[i] = 0 }; return }
            let raw = UnsafeMutableRawPointer(p.baseAddress!)
            forEachKept(UnsafeBufferPointer(p), k) { i, keep in
                if i + 8 <= n {
                    let v = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self)
                    raw.storeBytes(of: v.replacing(with: 0, where: .!keep), toByteOffset: 4 * i, as: SIMD8<UInt32>.self)
                } else {
                    for l in 0..<(n - i) where !keep[l] { p[i + l] = 0 }
                }
            }
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
        let raw = UnsafeRawPointer(x.baseAddress!)
        @inline(__always) func bits(_ i: Int) -> UInt32 { raw.load(fromByteOffset: 4 * i, as: UInt32.self) & 0x7FFF_FFFF }
        var remaining = k
        var prefix: UInt32 = 0
        for (shift, width) in [(UInt32(20), UInt32(11)), (10, 10), (0, 10)] {
            let buckets = 1 << Int(width)
            let mask = UInt32(buckets - 1)
            let fixedShift = shift + width
            hist.withUnsafeMutableBufferPointer { h in
                h.baseAddress!.update(repeating: 0, count: buckets)
                if fixedShift >= 31 {
                    for i in 0..<x.count { h[Int((bits(i) >> shift) & mask)] += 1 }
                } else {
                    for i in 0..<x.count {
                        let b = bits(i)
                        if b >> fixedShift == prefix { h[Int((b >> shift) & mask)] += 1 }
                    }
                }
            }
            var digit = Int(mask)
            while hist[digit] < remaining { remaining -= hist[digit]; digit -= 1 }
            prefix = prefix << width | UInt32(digit)
        }
        return Float(bitPattern: prefix)
    }

    /// Indices sorted by |x| ascending, ties by index (a stable order).
    static func ascendingMagnitudeOrder(_ x: [Float]) -> [Int] {
        x.indices.sorted { abs(x[$0]) < abs(x[$1]) || (abs(x[$0]) == abs(x[$1]) && $0 < $1) }
    }
}
