import CQuant
import SafeTensors

/// Magnitude pruning of a whole 16-bit float tensor (F16, BF16) straight on its storage bits: for
/// these formats |x| orders like the 15 low bits, so one 32768-bucket histogram gives the exact
/// k-th smallest magnitude, the tie budget, and (every entry of a bucket having the same value) the
/// norms the report needs. A second pass writes the output in 1 MiB pieces. No decode, no
/// tensor-sized buffer: the same result as the general path, at about the cost of reading the bytes.
enum HalfMagnitude {
    struct Result { let pruned: Int; let zeros: Int; let threshold: Float; let normSq: Double; let removedSq: Double }

    static func prune(_ src: UnsafeRawBufferPointer, dtype: DType, k: Int, write: (Int, UnsafeRawBufferPointer) throws -> Void) throws -> Result {
        precondition(dtype == .F16 || dtype == .BF16)
        let n = src.count / 2
        var hist = [Int](repeating: 0, count: 32768)
        let raw = src.baseAddress!
        hist.withUnsafeMutableBufferPointer { h in
            for i in 0..<n { h[Int(raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self) & 0x7FFF)] += 1 }
        }
        // Decoded value of each magnitude bucket.
        var bits = (0..<32768).map { UInt16($0) }
        var value = [Float](repeating: 0, count: 32768)
        Codec.decode(dtype, &bits, count: 32768, into: &value)
        // The k-th smallest magnitude t, and how many entries equal to t to prune.
        var t = 0, below = 0
        if k > 0 {
            while below + hist[t] < k { below += hist[t]; t += 1 }
        }
        let ties = k - below
        var normSq = 0.0, removedSq = 0.0
        for b in 0..<32768 where hist[b] > 0 && value[b].isFinite {
            let v2 = Double(value[b]) * Double(value[b]) * Double(hist[b])
            normSq += v2
            if k > 0 && b < t { removedSq += v2 }
        }
        if k > 0 && value[t].isFinite { removedSq += Double(value[t]) * Double(value[t]) * Double(ties) }
        // Write: keep magnitude > t, prune < t, and the first `ties` entries equal to t.
        let piece = 1 << 19
        let out = UnsafeMutableRawPointer.allocate(byteCount: piece * 2, alignment: 64)
        defer { out.deallocate() }
        var left = ties
        let tv = SIMD8<UInt16>(repeating: UInt16(t)), mask = SIMD8<UInt16>(repeating: 0x7FFF)
        var at = 0
        while at < n {
            let m = min(piece, n - at)
            var i = 0
            if k > 0 {
                while i + 8 <= m {
                    let v = raw.loadUnaligned(fromByteOffset: 2 * (at + i), as: SIMD8<UInt16>.self)
                    let mag = v & mask
                    var prune = mag .< tv
                    let eq = mag .== tv
                    if any(eq) { for l in 0..<8 where eq[l] && left > 0 { prune[l] = true; left -= 1 } }
                    out.storeBytes(of: v.replacing(with: 0, where: prune), toByteOffset: 2 * i, as: SIMD8<UInt16>.self)
                    i += 8
                }
            }
            while i < m {
                let v = raw.loadUnaligned(fromByteOffset: 2 * (at + i), as: UInt16.self)
                let mag = Int(v & 0x7FFF)
                var prune = false
                if k > 0 { prune = mag < t || (mag == t && left > 0); if mag == t && prune { left -= 1 } }
                out.storeBytes(of: prune ? 0 : v, toByteOffset: 2 * i, as: UInt16.self)
                i += 1
            }
            try write(at * 2, UnsafeRawBufferPointer(start: out, count: m * 2))
            at += m
        }
        // Zeros after: the pruned entries when t > 0 (every zero was below t and pruned); when t is 0
        // (or nothing is pruned), every zero of the input.
        let zeros = k > 0 && t > 0 ? k : max(k, hist[0])
        return Result(pruned: k, zeros: zeros, threshold: k > 0 ? value[t] : 0, normSq: normSq, removedSq: removedSq)
    }

    /// N:M magnitude pruning on 16-bit storage bits: in every M consecutive entries (rows are whole
    /// groups: the column count divides by M) keep the N largest magnitudes, pruning the M - N
    /// smallest with ties lower index first; norms from a table of squared bucket values.
    static func pruneNM(_ src: UnsafeRawBufferPointer, dtype: DType, n keep: Int, m: Int,
                        write: (Int, UnsafeRawBufferPointer) throws -> Void) throws -> Result {
        precondition(dtype == .F16 || dtype == .BF16)
        let count = src.count / 2
        var bits = (0..<32768).map { UInt16($0) }
        var value = [Float](repeating: 0, count: 32768)
        Codec.decode(dtype, &bits, count: 32768, into: &value)
        let square = value.map { $0.isFinite ? Double($0) * Double($0) : 0 }
        let raw = src.baseAddress!
        let piece = (1 << 19) / m * m
        let out = UnsafeMutableRawPointer.allocate(byteCount: piece * 2, alignment: 64)
        defer { out.deallocate() }
        var mags = [UInt16](repeating: 0, count: m), order = [Int](repeating: 0, count: m)
        var pruned = 0, zeros = 0
        var normSq = 0.0, removedSq = 0.0
        var at = 0
        while at < count {
            let len = min(piece, count - at)
            var g = 0
            if m == 4 {
                // Groups of four (2:4 and friends): one C pass (ranks by rotations, sixteen lanes at a time).
                var t = wt_prune_tally()
                square.withUnsafeBufferPointer { wt_prune_n4_half(raw + 2 * at, len / 4 * 4, Int32(keep), dtype == .BF16 ? 1 : 0, $0.baseAddress!, out, &t) }
                pruned += t.pruned; zeros += t.zeros; normSq += t.w_sq; removedSq += t.removed_sq
                g = len / 4 * 4
            }
            while g + m <= len {
                for j in 0..<m {
                    mags[j] = raw.loadUnaligned(fromByteOffset: 2 * (at + g + j), as: UInt16.self) & 0x7FFF
                    order[j] = j
                }
                // Stable ascending by magnitude (insertion sort of M entries).
                for a in 1..<m {
                    let x = order[a]
                    var b = a - 1
                    while b >= 0 && mags[order[b]] > mags[x] { order[b + 1] = order[b]; b -= 1 }
                    order[b + 1] = x
                }
                for j in 0..<m {
                    let v = raw.loadUnaligned(fromByteOffset: 2 * (at + g + j), as: UInt16.self)
                    out.storeBytes(of: v, toByteOffset: 2 * (g + j), as: UInt16.self)
                    normSq += square[Int(mags[j])]
                    if mags[j] == 0 { zeros += 1 }
                }
                for r in 0..<(m - keep) {
                    let j = order[r]
                    out.storeBytes(of: 0, toByteOffset: 2 * (g + j), as: UInt16.self)
                    removedSq += square[Int(mags[j])]
                    if mags[j] != 0 { zeros += 1 }
                    pruned += 1
                }
                g += m
            }
            try write(at * 2, UnsafeRawBufferPointer(start: out, count: len * 2))
            at += len
        }
        return Result(pruned: pruned, zeros: zeros, threshold: 0, normSq: normSq, removedSq: removedSq)
    }
}
