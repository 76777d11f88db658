import SafeTensors
import Linalg

/// Which SVD a low-rank job runs, and the randomized one's parameters (one rule for every action).
public struct SVDChoice: Sendable {
    /// nil: automatic (see `options`).
    public var method: TruncatedSVD.Method?
    public var oversample = 10
    public var powerIterations = 2
    public var seed: UInt64 = 0

    public init() {}

    /// Options for one tensor. Automatic: randomized when the rank is fixed and rank + oversample
    /// is at most a quarter of the smaller dimension, exact otherwise (the other rank rules need the
    /// whole spectrum).
    public func options(rank: Int?, rows: Int, cols: Int, stream: String) -> TruncatedSVD.Options {
        var o = TruncatedSVD.Options()
        if let method {
            o.method = method
        } else if let r = rank {
            o.method = 4 * (r + oversample) <= min(rows, cols) ? .randomized : .exact
        } else {
            o.method = .exact
        }
        o.oversample = oversample
        o.powerIterations = powerIterations
        o.seed = seed
        o.stream = stream
        return o
    }

    /// The report's parameters.
    public var parameters: [(String, JSONValue)] {
        [("svd", .string(method?.rawValue ?? "auto")), ("oversample", .int(oversample)),
         ("power_iterations", .int(powerIterations)), ("seed", .uint(seed))]
    }
}
