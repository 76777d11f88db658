/// The SVD engine shared by `lowrank-svd` and principal-weight pruning: the top-k singular
/// triplets of a row-major matrix, exactly (LAPACK gesdd, truncated) or by randomized subspace
/// iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1) with a Gaussian test matrix seeded by
/// (seed, stream). Signs follow sklearn's svd_flip: the largest-|u| entry of each left vector is
/// positive, so results do not depend on the LAPACK path.
public struct TruncatedSVD: Sendable {
    public enum Method: String, Sendable, CaseIterable { case exact, randomized }

    public struct Options: Sendable {
        public var method: Method = .exact
        public var oversample = 10
        public var powerIterations = 2
        public var seed: UInt64 = 0
        /// The stream of the random test matrix (the tensor name).
        public var stream = ""
        public init() {}
    }

    public let u: Matrix    // m x k
    public let s: [Float]   // k, descending
    public let vt: Matrix   // k x n

    public var rank: Int { s.count }

    public init(_ a: Matrix, rank k: Int, options: Options = Options()) throws {
        let m = a.rows, n = a.cols
        let k = max(0, min(k, m, n))
        switch options.method {
        case .exact:
            let full = try svd(a)
            self.init(u: full.u, s: full.s, vt: full.vt, keep: k)
        case .randomized:
            let l = min(k + max(0, options.oversample), m, n)
            guard l > 0 else { self.init(u: Matrix(rows: m, cols: 0), s: [], vt: Matrix(rows: 0, cols: n), keep: 0); return }
            var rng = SeededRNG(seed: options.seed, stream: options.stream)
            let omega = Matrix(rows: n, cols: l, data: (0..<(n * l)).map { _ in rng.nextGaussian() })
            var q = try orthonormalBasis(matmul(a, omega))                         // m x l
            for _ in 0..<max(0, options.powerIterations) {
                let w = try orthonormalBasis(matmul(a, transA: true, q))           // n x l
                q = try orthonormalBasis(matmul(a, w))                              // m x l
            }
            let b = matmul(q, transA: true, a)                                      // l x n
            let small = try svd(b)
            self.init(u: matmul(q, small.u), s: small.s, vt: small.vt, keep: k)
        }
    }

    /// Keeps the first `keep` triplets of a decomposition and fixes their signs.
    public init(u: Matrix, s: [Float], vt: Matrix, keep k: Int) {
        var uk = Matrix(rows: u.rows, cols: k), vk = Matrix(rows: k, cols: vt.cols)
        for j in 0..<k {
            var big = 0
            for i in 0..<u.rows where abs(u[i, j]) > abs(u[big, j]) { big = i }
            let sign: Float = u.rows > 0 && u[big, j] < 0 ? -1 : 1
            for i in 0..<u.rows { uk[i, j] = sign * u[i, j] }
            for c in 0..<vt.cols { vk[j, c] = sign * vt[j, c] }
        }
        self.u = uk
        self.s = Array(s.prefix(k))
        self.vt = vk
    }

    /// U diag(s) Vt.
    public func reconstruct() -> Matrix {
        var us = u
        for i in 0..<u.rows { for j in 0..<u.cols { us[i, j] *= s[j] } }
        return matmul(us, vt)
    }
}

/// Rank measures of a spectrum (descending singular values).
public enum Spectrum {
    /// #{σ_i > σ_1 · max(m, n) · ε_f32} (numpy's matrix_rank rule, in f32).
    public static func numericalRank(_ s: [Float], rows: Int, cols: Int) -> Int {
        guard let s1 = s.first, s1 > 0 else { return 0 }
        let tol = Double(s1) * Double(max(rows, cols)) * Double(Float.ulpOfOne)
        return s.filter { Double($0) > tol }.count
    }

    /// Σσ_i² / σ_1².
    public static func stableRank(_ s: [Float]) -> Double {
        guard let s1 = s.first, s1 > 0 else { return 0 }
        return s.reduce(0.0) { $0 + Double($1) * Double($1) } / (Double(s1) * Double(s1))
    }

    /// exp(entropy of σ / Σσ) (Roy & Vetterli).
    public static func effectiveRank(_ s: [Float]) -> Double {
        let total = s.reduce(0.0) { $0 + Double($1) }
        guard total > 0 else { return 0 }
        var h = 0.0
        for x in s where x > 0 { let p = Double(x) / total; h -= p * _logD(p) }
        return _expD(h)
    }

    /// The smallest k with Σ_{i<=k} σ_i² >= τ Σ σ_i² (0 for a zero matrix). `total` is Σσ² when the
    /// spectrum is truncated (‖A‖_F², known without an SVD).
    public static func energyRank(_ s: [Float], _ tau: Double, total: Double? = nil) -> Int {
        let all = total ?? s.reduce(0.0) { $0 + Double($1) * Double($1) }
        guard all > 0 else { return 0 }
        var acc = 0.0
        for (i, x) in s.enumerated() {
            acc += Double(x) * Double(x)
            if acc >= tau * all * (1 - 1e-12) { return i + 1 }
        }
        return s.count
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _logD(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func _expD(_ x: Double) -> Double { Glibc.exp(x) }
#elseif canImport(Darwin)
import Darwin
@inline(__always) func _logD(_ x: Double) -> Double { Darwin.log(x) }
@inline(__always) func _expD(_ x: Double) -> Double { Darwin.exp(x) }
#endif
