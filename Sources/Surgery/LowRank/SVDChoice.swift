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

    /// The exact SVD's cost above which the automatic rule considers the randomized one, in
    /// m·n·min(m, n) multiply-adds: gesdd of an m x n matrix costs a small multiple of that.
    /// Measured on one core here (OpenBLAS, rank 64, I/O included): 512 x 2048 (2^29) exact 0.36 s
    /// vs randomized 0.15 s; 1024 x 1024 (2^30) 0.57 s vs 0.09 s; 2048 x 2048 4.5 s vs 0.34 s;
    /// 4096 x 4096 42 s vs 1.3 s. Below the budget the exact answer costs a fraction of a second,
    /// so it is taken: it is the optimum (Eckart-Young), which the randomized one only approaches.
    public static let exactBudget = 1 << 29

    /// Options for one tensor. Automatic: exact whenever it is cheap (m·n·min(m, n) at most
    /// `exactBudget`), or whenever the randomized method would not save work (rank + oversample
    /// above a quarter of the smaller dimension), or the rank is not fixed (the other rank rules
    /// need the whole spectrum); randomized otherwise. The exact method iterates (converged
    /// subspace iteration, `TruncatedSVD.Options.iterative`) instead of a full gesdd when the rank
    /// is fixed, gesdd would cost more than `exactBudget`, and its block fits four times in the
    /// smaller dimension; `threads` workers share the products of one matrix.
    public func options(rank: Int?, rows: Int, cols: Int, stream: String, threads: Int = 1) -> TruncatedSVD.Options {
        var o = TruncatedSVD.Options()
        if let method {
            o.method = method
        } else {
            o.method = SVDChoice.automatic(rank: rank, rows: rows, cols: cols, oversample: oversample)
        }
        o.oversample = oversample
        o.powerIterations = powerIterations
        o.seed = seed
        o.stream = stream
        o.iterative = SVDChoice.iterates(rank: rank, rows: rows, cols: cols)
        o.threads = threads
        return o
    }

    /// Whether the exact method runs as converged subspace iteration (see `options`).
    public static func iterates(rank: Int?, rows: Int, cols: Int) -> Bool {
        guard let r = rank, r > 0 else { return false }
        let small = min(rows, cols)
        return Double(rows) * Double(cols) * Double(small) > Double(exactBudget) && 4 * TruncatedSVD.iterativeBlock(rank: r) <= small
    }

    /// Whether one matrix is worth every worker (products with it split across them) rather than
    /// one worker a matrix: the randomized and iterative methods, whose cost is products with A.
    public func sharesWorkers(rank: Int?, rows: Int, cols: Int) -> Bool {
        let o = options(rank: rank, rows: rows, cols: cols, stream: "")
        return o.method == .randomized || o.iterative
    }

    /// The automatic rule (see `options`).
    public static func automatic(rank: Int?, rows: Int, cols: Int, oversample: Int) -> TruncatedSVD.Method {
        guard let r = rank else { return .exact }
        let small = min(rows, cols)
        let cost = Double(rows) * Double(cols) * Double(small)
        if cost <= Double(exactBudget) { return .exact }
        return 4 * (r + oversample) <= small ? .randomized : .exact
    }

    /// What one tensor's report row says of its SVD beyond the method: the iterative exact method's
    /// iterations and its measured residual (largest ‖A v_i - s_i u_i‖ / s_1).
    public static func measured(_ t: TruncatedSVD) -> [(String, JSONValue)] {
        guard let it = t.iterations, let res = t.residual else { return [] }
        return [("svd_iterations", .int(it))] + metric("svd_residual", res)
    }

    /// The report's parameters.
    public var parameters: [(String, JSONValue)] {
        [("svd", .string(method?.rawValue ?? "auto")), ("oversample", .int(oversample)),
         ("power_iterations", .int(powerIterations)), ("seed", .uint(seed))]
    }
}
