/// Which entries a pruning rule removes, from non-negative scores (lower = pruned first).
///
/// The rules are exact and documented: a scope prunes exactly floor(count * sparsity) entries; ties
/// are pruned lower index first (the order of a stable ascending sort). Selection finds the k-th
/// smallest score by radix selection on the float bits, not by sorting.
public enum PruneMask {
    /// `true` = pruned. The `k` smallest scores (read as magnitudes) of `scores` (ties: lower index first). SIMD over
    /// the bit patterns (for non-negative floats integer order is float order): on real weights
    /// every scalar branch here would be a coin flip.
    public static func smallest(_ scores: UnsafeBufferPointer<Float>, _ k: Int) -> [Bool] {
        var scratch = [Int](repeating: 0, count: 2048)
        return smallest(scores, k, scratch: &scratch)
    }

    static func smallest(_ scores: UnsafeBufferPointer<Float>, _ k: Int, scratch: inout [Int]) -> [Bool] {
        let n = scores.count
        guard k > 0 else { return Array(repeating: false, count: n) }
        guard k < n else { return Array(repeating: true, count: n) }
        // k-th smallest = (n - k + 1)-th largest; scores are read as magnitudes.
        let t = Sparsifier.kthLargestMagnitude(scores, n - k + 1, scratch: &scratch).bitPattern
        let raw = UnsafeRawPointer(scores.baseAddress!)
        let tv = SIMD8<UInt32>(repeating: t), off = SIMD8<UInt32>(repeating: 0x7FFF_FFFF)
        let full = n / 8 * 8
        var below = 0
        for i in stride(from: 0, to: full, by: 8) {
            let v = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self) & off
            below &+= Int(SIMD8<Int32>(repeating: 0).replacing(with: 1, where: v .< tv).wrappedSum())
        }
        for i in full..<n where scores[i].bitPattern & 0x7FFF_FFFF < t { below += 1 }
        var ties = k - below   // entries equal to t to prune, lower index first
        return [Bool](unsafeUninitializedCapacity: n) { out, done in
            let o = UnsafeMutableRawPointer(out.baseAddress!)
            for i in stride(from: 0, to: full, by: 8) {
                let v = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<UInt32>.self) & off
                var prune = v .< tv
                let eq = v .== tv
                if any(eq) { for l in 0..<8 where eq[l] && ties > 0 { prune[l] = true; ties -= 1 } }
                let bytes = SIMD8<UInt8>(truncatingIfNeeded: SIMD8<Int32>(repeating: 0).replacing(with: 1, where: prune))
                o.storeBytes(of: bytes, toByteOffset: i, as: SIMD8<UInt8>.self)
            }
            for i in full..<n {
                let b = scores[i].bitPattern & 0x7FFF_FFFF
                out[i] = b < t || (b == t && ties > 0)
                if b == t && out[i] { ties -= 1 }
            }
            done = n
        }
    }

    /// Copies `count` elements of `size` bytes from `src` to `dst`, writing all-zero bytes (+0.0)
    /// where `pruned[offset + i]` is true: a branch-free select, eight lanes at a time.
    public static func apply(_ pruned: [Bool], from offset: Int = 0, src: UnsafeRawPointer, dst: UnsafeMutableRawPointer, count n: Int, size: Int) {
        pruned.withUnsafeBytes { mb in
            let m = mb.baseAddress! + offset
            func run<T: FixedWidthInteger & SIMDScalar>(_: T.Type) {
                var i = 0
                while i + 8 <= n {
                    // 0 - flag is all ones where pruned: v & ~that keeps or clears each lane.
                    let flag = SIMD8<T>(truncatingIfNeeded: m.loadUnaligned(fromByteOffset: i, as: SIMD8<UInt8>.self))
                    let v = src.loadUnaligned(fromByteOffset: i * size, as: SIMD8<T>.self)
                    dst.storeBytes(of: v & ~(SIMD8<T>(repeating: 0) &- flag), toByteOffset: i * size, as: SIMD8<T>.self)
                    i += 8
                }
                while i < n {
                    let v = src.loadUnaligned(fromByteOffset: i * size, as: T.self)
                    dst.storeBytes(of: pruned[offset + i] ? 0 : v, toByteOffset: i * size, as: T.self)
                    i += 1
                }
            }
            switch size {
            case 1: run(UInt8.self)
            case 2: run(UInt16.self)
            case 4: run(UInt32.self)
            default: run(UInt64.self)
            }
        }
    }

    /// Σ w_k² over the pruned entries, accumulated in f64 four lanes at a time.
    public static func prunedSquares(_ w: [Float], _ pruned: [Bool]) -> Double {
        w.withUnsafeBufferPointer { wp in
            pruned.withUnsafeBytes { mb in
                let raw = UnsafeRawPointer(wp.baseAddress!), m = mb.baseAddress!
                var acc = SIMD4<Double>()
                var i = 0
                while i + 4 <= wp.count {
                    let v = SIMD4<Double>(raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD4<Float>.self))
                    let f = SIMD4<Double>(SIMD4<UInt8>(truncatingIfNeeded: m.loadUnaligned(fromByteOffset: i, as: SIMD4<UInt8>.self)))
                    acc += (v * v).replacing(with: 0, where: f .== 0)   // a kept NaN must not reach the sum
                    i += 4
                }
                var total = acc.sum()
                while i < wp.count { if pruned[i] { total += Double(wp[i]) * Double(wp[i]) }; i += 1 }
                return total
            }
        }
    }

    /// Per row of `cols`: the floor(cols * sparsity) smallest of each row.
    public static func perRow(_ scores: UnsafeBufferPointer<Float>, cols: Int, sparsity: Double) -> [Bool] {
        let rows = cols > 0 ? scores.count / cols : 0
        let k = Int(Double(cols) * sparsity)
        var out = [Bool](repeating: false, count: scores.count)
        var scratch = [Int](repeating: 0, count: 2048)
        for r in 0..<rows {
            let row = UnsafeBufferPointer(rebasing: scores[(r * cols)..<((r + 1) * cols)])
            let m = smallest(row, k, scratch: &scratch)
            for j in 0..<cols where m[j] { out[r * cols + j] = true }
        }
        return out
    }

    /// N:M along each row: in every M consecutive entries keep the N largest scores (prune the
    /// M - N smallest; ties: lower index pruned first). Scores are read as magnitudes, like
    /// everywhere here, so raw weights can be passed for magnitude pruning.
    public static func nm(_ scores: UnsafeBufferPointer<Float>, cols: Int, n keep: Int, m: Int) -> [Bool] {
        var out = [Bool](repeating: false, count: scores.count)
        var idx = [Int](repeating: 0, count: m)
        var g = 0
        while g + m <= scores.count {
            for j in 0..<m { idx[j] = g + j }
            // Stable ascending by score: insertion sort of M (4 or 8) entries.
            for a in 1..<m {
                let x = idx[a]
                var b = a - 1
                while b >= 0 && abs(scores[idx[b]]) > abs(scores[x]) { idx[b + 1] = idx[b]; b -= 1 }
                idx[b + 1] = x
            }
            for j in 0..<(m - keep) { out[idx[j]] = true }
            g += m
        }
        return out
    }
}

