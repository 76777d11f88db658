import CQuant

/// DSnoT (Zhang et al., "Dynamic Sparse No Training"): training-free prune-and-grow on top of an
/// initial mask, row by row. The expected output error a row's pruned weights cause is
/// err = Σ_{j pruned} w_j E[x_j]. While |err| is above a threshold and swapping would not flip its
/// sign, the pruned weight that best cancels err (ranked by w_j E[x_j] / Var[x_j]) is grown back and
/// a kept weight is pruned in exchange (unstructured: the lowest Wanda score among the kept weights
/// whose w_j E[x_j] has the sign that moves err towards 0; N:M: the lowest-scoring kept weight in the
/// grown weight's group, so every group keeps N). Every swap keeps the row's count. Ties in every
/// order go to the lower index. The rows run through CQuant's `wt_dsnot_rows` (also called by the
/// streamed row path, `wt_prune_rows`).
public struct DSnoT: Sendable {
    public var maxCycles = 50
    public var threshold = 0.1
    public init() {}

    /// Refines `pruned` (true = pruned), rows of `cols` entries, in place; returns the swaps.
    /// - Parameters:
    ///   - w: the weights; mean, variance: per input channel; score: the Wanda score of each entry
    ///     (the order in which kept weights are given up); groupSize: M of N:M pruning, or nil.
    public func refine(_ pruned: inout [Bool], w: [Float], cols: Int, mean: [Double], variance: [Double], score: [Float],
                       groupSize: Int?) -> Int {
        precondition(pruned.count == w.count && score.count == w.count && mean.count == cols && variance.count == cols,
                     "DSnoT.refine: sizes")
        guard cols > 0 else { return 0 }
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(8, wt_dsnot_scratch_bytes(cols)), alignment: 16)
        defer { scratch.deallocate() }
        return pruned.withUnsafeMutableBytes { p in
            let mask = p.bindMemory(to: UInt8.self)   // Bool is one byte, 0 or 1
            return w.withUnsafeBufferPointer { wp in score.withUnsafeBufferPointer { sp in
                mean.withUnsafeBufferPointer { mp in variance.withUnsafeBufferPointer { vp in
                    var params = parameters(mean: mp.baseAddress!, variance: vp.baseAddress!, groupSize: groupSize)
                    return wt_dsnot_rows(wp.baseAddress!, mask.baseAddress!, sp.baseAddress!, w.count / cols, cols, &params, scratch)
                } }
            } }
        }
    }

    /// The C kernels' settings (the pointers must outlive their use).
    func parameters(mean: UnsafePointer<Double>, variance: UnsafePointer<Double>, groupSize: Int?) -> wt_dsnot_params {
        wt_dsnot_params(mean: mean, var: variance, nm_m: groupSize ?? 0, max_cycles: max(0, maxCycles), threshold: threshold)
    }
}
