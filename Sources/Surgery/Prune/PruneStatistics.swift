import SafeTensors

/// Activation statistics for activation-aware pruning: a safetensors file keyed by module name
/// (`<module>.act_sq_sum` = Σ x_j² per input channel j, for `<module>.weight`).
public struct PruneStatistics: Sendable {
    let checkpoint: Checkpoint

    public init(path: String) throws { checkpoint = try Checkpoint(path: path) }

    public var path: String { checkpoint.path }

    /// Σx² per input channel for a weight, scaled to a maximum of 1 (only ratios matter, so any
    /// positive scaling of the file gives the same masks). nil when the file has no entry for it.
    public func channelSquares(forWeight name: String, inputs: Int) throws -> [Double]? {
        let module = name.hasSuffix(".weight") ? String(name.dropLast(".weight".count)) : name
        guard let e = checkpoint.entry(module + ".act_sq_sum") else { return nil }
        guard e.info.dtype.isNumeric, e.info.count == inputs else {
            throw FormatError(file: checkpoint.filePath(of: e), tensor: e.name,
                              "has \(e.info.count) entries, the weight '\(name)' has \(inputs) input channels")
        }
        let v = decodeDoubles(checkpoint, e)
        if let bad = v.firstIndex(where: { !($0 >= 0) || !$0.isFinite }) {
            throw FormatError(file: checkpoint.filePath(of: e), tensor: e.name, "entry \(bad) is \(v[bad]): Σx² must be finite and >= 0")
        }
        let m = v.max() ?? 0
        return m > 0 ? v.map { $0 / m } : v
    }
}
