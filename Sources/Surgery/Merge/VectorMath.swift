/// Reductions over f32 data with f64 accumulation (fixed order for a fixed length, so results do
/// not depend on threads), and the element-wise helpers the methods share.
enum VectorMath {
    static func dot(_ a: [Float], _ b: [Float]) -> Double {
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                var s = SIMD4<Double>()
                var i = 0
                let n = pa.count
                while i + 4 <= n {
                    s += SIMD4<Double>(Double(pa[i]), Double(pa[i + 1]), Double(pa[i + 2]), Double(pa[i + 3]))
                        * SIMD4<Double>(Double(pb[i]), Double(pb[i + 1]), Double(pb[i + 2]), Double(pb[i + 3]))
                    i += 4
                }
                var r = s.sum()
                while i < n { r += Double(pa[i]) * Double(pb[i]); i += 1 }
                return r
            }
        }
    }

    static func norm(_ a: [Float]) -> Double { dot(a, a).squareRoot() }
    static func sumAbs(_ a: [Float]) -> Double { a.reduce(0.0) { $0 + Double(abs($1)) } }

    /// a - b
    static func sub(_ a: [Float], _ b: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: a.count)
        for i in a.indices { out[i] = a[i] - b[i] }
        return out
    }

    /// Σ c_i x_i, accumulated in f64 per element.
    static func combine(_ xs: [[Float]], _ c: [Double], count: Int) -> [Float] {
        var acc = [Double](repeating: 0, count: count)
        for (x, w) in zip(xs, c) where w != 0 {
            x.withUnsafeBufferPointer { p in
                for i in 0..<count { acc[i] += w * Double(p[i]) }
            }
        }
        return acc.map { Float($0) }
    }

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        let na = norm(a), nb = norm(b)
        return na > 0 && nb > 0 ? dot(a, b) / (na * nb) : .nan
    }
}
