import SafeTensors

/// Activation statistics for activation-aware pruning, keyed by Hugging Face module name:
/// - a safetensors file of `<module>.act_sq_sum` (Σ x_j² per input channel j of `<module>.weight`),
///   and for DSnoT `<module>.act_mean`, `<module>.act_var`;
/// - or llama.cpp's imatrix GGUF (`<gguf name>.in_sum2` / `.counts`), whose LLaMA-family GGUF names
///   are mapped to Hugging Face's.
public struct PruneStatistics: Sendable {
    enum Source: Sendable { case safetensors(Checkpoint), imatrix(GGUFFile) }
    let source: Source

    public init(path: String) throws {
        source = GGUFFile.isGGUF(path) ? .imatrix(try GGUFFile(path: path)) : .safetensors(try Checkpoint(path: path))
    }

    public var path: String {
        switch source { case let .safetensors(c): return c.path; case let .imatrix(g): return g.path }
    }
    var checkpoint: Checkpoint? { if case let .safetensors(c) = source { return c }; return nil }

    /// Σx² per input channel for a weight, scaled to a maximum of 1 (only ratios matter, so any
    /// positive scaling of the file gives the same masks). nil when the file has no entry for it.
    /// - Parameter normalized: divided by the largest (Wanda's scores only compare within a
    ///   module); false keeps Σx² as recorded, to compare modules (layer importance).
    public func channelSquares(forWeight name: String, inputs: Int, normalized: Bool = true) throws -> [Double]? {
        guard let v = try vector(forWeight: name, stat: "act_sq_sum", inputs: inputs) else { return nil }
        if let bad = v.firstIndex(where: { !($0 >= 0) || !$0.isFinite }) {
            throw FormatError(file: path, tensor: name, "statistic entry \(bad) is \(v[bad]): Σx² must be finite and >= 0")
        }
        let m = v.max() ?? 0
        return normalized && m > 0 ? v.map { $0 / m } : v
    }

    /// Per-channel mean and variance of the inputs (DSnoT); nil when absent.
    public func channelMoments(forWeight name: String, inputs: Int) throws -> (mean: [Double], variance: [Double])? {
        guard let m = try vector(forWeight: name, stat: "act_mean", inputs: inputs),
              let v = try vector(forWeight: name, stat: "act_var", inputs: inputs) else { return nil }
        return (m, v)
    }

    private func vector(forWeight name: String, stat: String, inputs: Int) throws -> [Double]? {
        let module = name.hasSuffix(".weight") ? String(name.dropLast(".weight".count)) : name
        switch source {
        case let .safetensors(c):
            guard let e = c.entry(module + "." + stat) else { return nil }
            guard e.info.dtype.isNumeric, e.info.count == inputs else {
                throw FormatError(file: c.filePath(of: e), tensor: e.name, "has \(e.info.count) entries, the weight '\(name)' has \(inputs) input channels")
            }
            return decodeDoubles(c, e)
        case let .imatrix(g):
            guard stat == "act_sq_sum", let gname = GGUFNames.gguf(forHF: name),
                  let sums = g.tensor(gname + ".in_sum2") else { return nil }
            guard sums.count == inputs else {
                throw FormatError(file: g.path, tensor: sums.name, "has \(sums.count) entries (per-expert statistics are not supported), the weight '\(name)' has \(inputs) input channels")
            }
            // in_sum2 / counts is the mean square; counts is one number here, so the ratio between
            // channels, all that matters, is in_sum2's.
            return try g.floats(sums).map(Double.init)
        }
    }
}
