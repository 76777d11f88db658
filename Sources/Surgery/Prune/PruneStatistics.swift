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
    public func channelSquares(forWeight name: String, inputs: Int) throws -> [Double]? {
        guard let v = try vector(forWeight: name, stat: "act_sq_sum", inputs: inputs) else { return nil }
        if let bad = v.firstIndex(where: { !($0 >= 0) || !$0.isFinite }) {
            throw FormatError(file: path, tensor: name, "statistic entry \(bad) is \(v[bad]): Σx² must be finite and >= 0")
        }
        let m = v.max() ?? 0
        return m > 0 ? v.map { $0 / m } : v
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

/// llama.cpp's tensor names for the LLaMA family (llama, mistral, qwen2), from Hugging Face's.
public enum GGUFNames {
    static let layerParts: [(String, String)] = [
        ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"), ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
    ]

    public static func gguf(forHF name: String) -> String? {
        switch name {
        case "model.embed_tokens.weight": return "token_embd.weight"
        case "lm_head.weight": return "output.weight"
        case "model.norm.weight": return "output_norm.weight"
        default: break
        }
        let p = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard p.count >= 4, p[0] == "model", p[1] == "layers", let layer = Int(p[2]) else { return nil }
        let rest = p[3...].joined(separator: ".")
        for (hf, g) in layerParts where rest.hasPrefix(hf + ".") {
            return "blk.\(layer).\(g)" + rest.dropFirst(hf.count)
        }
        return nil
    }
}
