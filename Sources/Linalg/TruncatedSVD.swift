/// The SVD engine shared by `lowrank-svd` and principal-weight pruning: the top-k singular
/// triplets of a row-major matrix, exactly (LAPACK gesdd, truncated, or subspace iteration with
/// Rayleigh-Ritz run until the triplets' residuals reach f32 rounding, see `Options.iterative`) or
/// by randomized subspace iteration (Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1) with a
/// Gaussian test matrix seeded by (seed, stream). Signs follow sklearn's svd_flip: the
/// largest-|u| entry of each left vector is positive, so results do not depend on the LAPACK path.
public struct TruncatedSVD: Sendable {
    public enum Method: String, Sendable, CaseIterable { case exact, randomized }

    public struct Options: Sendable {
        public var method: Method = .exact
        public var oversample = 10
        public var powerIterations = 2
        public var seed: UInt64 = 0
        /// The stream of the random test matrix (the tensor name).
        public var stream = ""
        /// Exact top-k by converged subspace iteration instead of a full gesdd (for large matrices
        /// and small ranks: the caller's rule, `SVDChoice`); gesdd still when it does not converge.
        public var iterative = false
        /// Workers for the products with the matrix (results do not depend on it).
        public var threads = 1
        /// Iterations before the iterative exact method hands over to gesdd.
        public var maxIterations = 60
        public init() {}
    }

    public let u: Matrix    // m x k
    public let s: [Float]   // k, descending
    public let vt: Matrix   // k x n
    /// Subspace iterations run by the iterative exact method (nil: gesdd or randomized).
    public private(set) var iterations: Int?
    /// Its largest residual ‖A v_i - s_i u_i‖ / s_1 over the kept triplets, measured.
    public private(set) var residual: Double?

    public var rank: Int { s.count }

    public init(_ a: Matrix, rank k: Int, options: Options = Options()) throws {
        let m = a.rows, n = a.cols
        let k = max(0, min(k, m, n))
        let threads = max(1, options.threads)
        switch options.method {
        case .exact:
            if options.iterative, k > 0, let found = try Self.subspaceIteration(a, rank: k, options: options) {
                self = found
                return
            }
            let full = try svd(a)
            self.init(u: full.u, s: full.s, vt: full.vt, keep: k)
        case .randomized:
            let l = min(k + max(0, options.oversample), m, n)
            guard l > 0 else { self.init(u: Matrix(rows: m, cols: 0), s: [], vt: Matrix(rows: 0, cols: n), keep: 0); return }
            var q = try orthonormalBasisCholeskyQR2(BlockedProducts.times(a, Self.testMatrix(n, l, options), threads: threads))   // m x l
            for _ in 0..<max(0, options.powerIterations) {
                let w = try orthonormalBasisCholeskyQR2(BlockedProducts.transposedTimes(a, q, threads: threads))  // n x l
                q = try orthonormalBasisCholeskyQR2(BlockedProducts.times(a, w, threads: threads))                // m x l
            }
            let b = BlockedProducts.transposedPanelTimes(q, a, threads: threads)                                 // l x n
            let small = try svd(b)
            self.init(u: matmul(q, small.u), s: small.s, vt: small.vt, keep: k)
        }
    }

    /// The Gaussian test matrix (n x l) of (seed, stream).
    static func testMatrix(_ n: Int, _ l: Int, _ options: Options) -> Matrix {
        var rng = SeededRNG(seed: options.seed, stream: options.stream)
        return Matrix(rows: n, cols: l, data: (0..<(n * l)).map { _ in rng.nextGaussian() })
    }

    /// The block size of the iterative exact method for rank k: twice the rank (at least k + 16),
    /// so each iteration shrinks the error by (σ_{l+1} / σ_k)², about a quarter on the decaying
    /// spectra of fine-tuning deltas.
    public static func iterativeBlock(rank k: Int) -> Int { max(2 * k, k + 16) }

    /// Subspace iteration with Rayleigh-Ritz (Saad, Numerical Methods for Large Eigenvalue
    /// Problems, ch. 5) on AᵀA, two products with A an iteration. Each iteration measures the
    /// residuals r_i = ‖A v_i - s_i u_i‖ of the top k Ritz triplets (Aᵀu_i = s_i v_i holds by
    /// construction); it stops when they are all at most 1e-6·s_1 (gesdd's own residuals in f32
    /// are about 1e-7·s_1), or when they stop shrinking below 1e-4·s_1 (rounding reached), and
    /// gives up (nil: the caller runs gesdd) after `Options.maxIterations`.
    static func subspaceIteration(_ a: Matrix, rank k: Int, options: Options) throws -> TruncatedSVD? {
        let m = a.rows, n = a.cols, threads = max(1, options.threads)
        let l = min(iterativeBlock(rank: k), m, n)
        var q = try orthonormalBasisCholeskyQR2(BlockedProducts.times(a, testMatrix(n, l, options), threads: threads))
        var best = Double.infinity, sinceBest = 0
        for it in 1...max(1, options.maxIterations) {
            let b = BlockedProducts.transposedPanelTimes(q, a, threads: threads)   // B = QᵀA, l x n
            let small = try svd(b)                                                // B = Ũ S Vᵀ
            let u = matmul(q, small.u)                                         // Ritz vectors, m x l
            let v = small.vt.transposed                                        // n x l
            let y = BlockedProducts.times(a, v, threads: threads)              // A V, m x l
            let s1 = Double(small.s.first ?? 0)
            var worst = 0.0
            for j in 0..<k {
                var r = 0.0
                for i in 0..<m { let d = Double(y[i, j]) - Double(small.s[j]) * Double(u[i, j]); r += d * d }
                worst = max(worst, r.squareRoot())
            }
            let rel = s1 > 0 ? worst / s1 : 0
            guard rel.isFinite else { return nil }   // non-finite entries: gesdd's answer (or error), not 60 rounds of NaN
            if rel < best * 0.5 { best = rel; sinceBest = 0 } else { sinceBest += 1 }
            if rel <= 1e-6 || (sinceBest >= 3 && best <= 1e-4) {
                var t = TruncatedSVD(u: u, s: small.s, vt: small.vt, keep: k)
                t.iterations = it
                t.residual = rel
                return t
            }
            q = try orthonormalBasisCholeskyQR2(y)
        }
        return nil
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
