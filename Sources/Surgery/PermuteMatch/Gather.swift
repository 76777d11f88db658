#if canImport(Glibc)
import Glibc
#endif

/// Re-indexing a tensor along several axes at once: dst[j0, j1, ...] = src[i0[j0], i1[j1], ...].
/// Works on raw elements of any whole-byte size, so permuted outputs keep B's bytes exactly.
enum Gather {
    static func gather(_ src: UnsafeRawPointer, into dst: UnsafeMutableRawPointer, shape: [Int], elementSize es: Int,
                       _ index: [[Int]?]) {
        let rank = shape.count
        var tail = rank
        while tail > 0 && index[tail - 1] == nil { tail -= 1 }
        let total = shape.reduce(1, *)
        guard tail > 0 else { memcpy(dst, src, total * es); return }
        var strides = [Int](repeating: 1, count: rank)
        var k = rank - 2
        while k >= 0 { strides[k] = strides[k + 1] * shape[k + 1]; k -= 1 }
        func walk(_ d: Int, _ s: Int, _ o: Int) {
            let n = shape[d]
            let idx = index[d]
            if d == tail - 1 {
                let block = strides[d] * es
                if block == es, let idx {
                    lastAxis(src + s * es, dst + o * es, idx, es)
                    return
                }
                for j in 0..<n {
                    let from = idx?[j] ?? j
                    memcpy(dst + (o + j * strides[d]) * es, src + (s + from * strides[d]) * es, block)
                }
                return
            }
            for j in 0..<n { walk(d + 1, s + (idx?[j] ?? j) * strides[d], o + j * strides[d]) }
        }
        walk(0, 0, 0)
    }

    /// The innermost axis permuted: one element at a time, typed so it stays a plain load/store.
    private static func lastAxis(_ s: UnsafeRawPointer, _ d: UnsafeMutableRawPointer, _ idx: [Int], _ es: Int) {
        func run<T>(_: T.Type) {
            let sp = s.assumingMemoryBound(to: T.self), dp = d.assumingMemoryBound(to: T.self)
            idx.withUnsafeBufferPointer { ix in for j in 0..<ix.count { dp[j] = sp[ix[j]] } }
        }
        switch es {
        case 1: run(UInt8.self)
        case 2: run(UInt16.self)
        case 4: run(UInt32.self)
        case 8: run(UInt64.self)
        default: for j in 0..<idx.count { memcpy(d + j * es, s + idx[j] * es, es) }
        }
    }

    /// Floats gathered into a new array.
    static func floats(_ v: [Float], shape: [Int], _ index: [[Int]?]) -> [Float] {
        if v.isEmpty || index.allSatisfy({ $0 == nil }) { return v }
        return [Float](unsafeUninitializedCapacity: v.count) { buf, done in
            v.withUnsafeBytes { gather($0.baseAddress!, into: UnsafeMutableRawPointer(buf.baseAddress!), shape: shape, elementSize: 4, index) }
            done = v.count
        }
    }
}
