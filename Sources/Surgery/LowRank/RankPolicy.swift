import Linalg

/// How many singular triplets to keep (the rank rules of mergekit, kohya and PEFT).
public enum RankPolicy: Sendable, Equatable {
    /// At most R.
    case rank(Int)
    /// The smallest k holding at least this fraction of the energy Σσ².
    case energy(Double)
    /// σ_i > σ_1 / t.
    case svRatio(Double)
    /// σ_i > ε (absolute).
    case svEpsilon(Double)

    /// The rank for a spectrum (descending), with the reason the report gives.
    public func choose(_ s: [Float], total: Double?) -> (Int, String) {
        switch self {
        case let .rank(r): return (min(r, s.count), "rank \(r)")
        case let .energy(t): return (Spectrum.energyRank(s, t, total: total), "energy >= \(t)")
        case let .svRatio(t): return (s.filter { Double($0) > Double(s.first ?? 0) / t }.count, "sigma > sigma_1 / \(t)")
        case let .svEpsilon(e): return (s.filter { Double($0) > e }.count, "sigma > \(e)")
        }
    }

    /// A fixed rank can use a truncated (randomized) SVD; the other rules need the whole spectrum.
    public var fixedRank: Int? { if case let .rank(r) = self { return r }; return nil }
}
