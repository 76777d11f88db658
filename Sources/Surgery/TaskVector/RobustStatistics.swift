import Foundation

/// Median, MAD and robust z-scores: the yardstick of `task-vector audit`. A robust z-score says how
/// many standard deviations a value lies from the median of its peers, with the spread taken from
/// the median absolute deviation (MAD · 1.4826 equals the standard deviation for normal data), so a
/// few outliers cannot hide themselves by inflating the spread.
public enum RobustStatistics {
    /// Scores are capped here (a value apart from peers that do not vary at all).
    public static let cap = 1000.0

    /// The median (the mean of the two middle values for an even count); nil when empty.
    public static func median(_ xs: [Double]) -> Double? {
        guard !xs.isEmpty else { return nil }
        let s = xs.sorted()
        let m = s.count / 2
        return s.count % 2 == 1 ? s[m] : (s[m - 1] + s[m]) / 2
    }

    /// z_i = (x_i - median) / (1.4826 · MAD); when MAD is 0 (more than half the values equal),
    /// the mean absolute deviation · 1.2533 stands in; when that is 0 too, every value is the
    /// median and scores 0. Capped at ±`cap`.
    /// `minimumSpread` keeps peers that barely vary (six layers changed by the same amount to a
    /// percent) from turning a small difference into a large score.
    public static func zScores(_ xs: [Double], minimumSpread: Double = 0) -> [Double] {
        guard let med = median(xs) else { return [] }
        let dev = xs.map { abs($0 - med) }
        var spread = 1.4826 * (median(dev) ?? 0)
        if spread <= 0 { spread = 1.2533 * dev.reduce(0, +) / Double(dev.count) }
        spread = max(spread, minimumSpread)
        guard spread > 0 else { return xs.map { _ in 0 } }
        return xs.map { max(-cap, min(cap, ($0 - med) / spread)) }
    }

    /// The smallest spread of log values: one robust SD is never less than a ratio of e^0.1 ≈ 1.105.
    public static let minimumLogSpread = 0.1

    /// Robust z-scores of log(x + δ) (norms are compared on a log scale: a change twice as large
    /// is the same step whatever the tensor's scale), δ = 10⁻³ · the root mean square of xs, so
    /// exact zeros stay finite; the spread is at least `minimumLogSpread`.
    public static func logZScores(_ xs: [Double]) -> [Double] {
        guard !xs.isEmpty else { return [] }
        let rms = (xs.reduce(0) { $0 + $1 * $1 } / Double(xs.count)).squareRoot()
        let delta = rms > 0 ? 1e-3 * rms : 1e-30
        return zScores(xs.map { log($0 + delta) }, minimumSpread: minimumLogSpread)
    }
}

