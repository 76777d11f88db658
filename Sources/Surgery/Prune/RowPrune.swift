import CQuant
import SafeTensors

/// Row-scope and N:M magnitude and Wanda pruning, with or without DSnoT's refinement, streamed in
/// pieces of rows of about 256 KiB decoded (they stay in a core's L2 between the decode and the
/// pass; 1 MiB pieces did not): decode, then one C pass per row (`wt_prune_rows`: scores,
/// selection, mask, DSnoT's swaps, output bytes, the report's sums), then write. Masks, scores and
/// decoded tensors are never held whole. The rule is `PruneMask.smallest` per row (or `PruneMask.nm`), then
/// `DSnoT.refine`; the outputs are the generic path's byte for byte.
enum RowPrune {
    /// DSnoT's part: its settings, the input channels' moments, and the giving-up order's column
    /// scale (the square roots of the squared norms; nil when the selection's scores are Wanda's).
    struct Refinement {
        var dsnot: DSnoT
        var mean: [Double], variance: [Double]
        var giveScale: [Double]?
    }

    /// - Parameters:
    ///   - k: entries pruned per row (without nm); nm: keep N of every M consecutive entries.
    ///   - columnScale: Wanda's sqrt of the activations' squared norms per input column (nil: |w|).
    ///   - activations: the squared norms themselves, for the estimated output error (nil: none).
    static func prune(_ ckpt: Checkpoint, _ e: Checkpoint.Entry, cols: Int, k: Int, nm: (n: Int, m: Int)?, columnScale: [Double]?, activations: [Double]?,
                      refinement: Refinement? = nil, write: (Int, UnsafeRawBufferPointer) throws -> Void) throws -> wt_prune_tally {
        let src = ckpt.bytes(e)
        let size = e.info.dtype.size!, rows = cols > 0 ? e.info.count / cols : 0
        let rowsPer = max(1, (1 << 16) / max(1, cols))
        let x = UnsafeMutablePointer<Float>.allocate(capacity: rowsPer * cols)
        let out = UnsafeMutableRawPointer.allocate(byteCount: max(1, rowsPer * cols * size), alignment: 64)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(8, wt_prune_rows_scratch_bytes(cols, refinement == nil ? 0 : 1)), alignment: 64)
        defer { x.deallocate(); out.deallocate(); scratch.deallocate() }
        var tally = wt_prune_tally()
        try optional(refinement?.mean) { mean in try optional(refinement?.variance) { variance in
            var params = refinement.map { $0.dsnot.parameters(mean: mean!, variance: variance!, groupSize: nm?.m) }
            let rule = wt_row_rule(k: nm == nil ? k : 0, nm_keep: nm?.n ?? 0, nm_m: nm?.m ?? 0)
            var r = 0
            while r < rows {
                let m = min(rowsPer, rows - r), n = m * cols
                let piece = src.baseAddress! + r * cols * size
                Codec.decode(e.info.dtype, piece, count: n, into: x)
                optional(columnScale) { scale in optional(activations) { act in optional(refinement?.giveScale) { give in
                    if params == nil {
                        wt_prune_rows(x, piece, Int32(size), m, cols, rule, scale, act, nil, give, out, scratch, &tally)
                    } else {
                        wt_prune_rows(x, piece, Int32(size), m, cols, rule, scale, act, &params!, give, out, scratch, &tally)
                    }
                } } }
                try write(r * cols * size, UnsafeRawBufferPointer(start: out, count: n * size))
                r += m
            }
        } }
        return tally
    }

    /// The base address of an optional array (nil for nil), for the C call.
    private static func optional<R>(_ v: [Double]?, _ body: (UnsafePointer<Double>?) throws -> R) rethrows -> R {
        guard let v else { return try body(nil) }
        return try v.withUnsafeBufferPointer { try body($0.baseAddress) }
    }
}
