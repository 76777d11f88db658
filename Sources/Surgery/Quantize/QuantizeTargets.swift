import SafeTensors

/// Which tensors `wtool quantize` touches. By default the 2-D weight matrices, except embeddings
/// and the output head (llama-quantize and llm-compressor keep those at high precision: they are
/// few, large-error and looked up or used once) — norms and biases are 1-D and always kept.
/// `--include` replaces the default set, `--exclude` removes from it.
public struct QuantizeTargets: Sendable {
    public let selection: TensorSelection

    static let embeddingMarkers = ["embed", "wte", "wpe", "tok_embeddings", "token_embd", "word_embeddings", "position_embeddings", "shared.weight"]
    static let headNames: Set<String> = ["lm_head.weight", "output.weight", "embed_out.weight"]

    public static func isDefaultTarget(_ name: String, shape: [UInt64]) -> Bool {
        guard shape.count >= 2, name.hasSuffix("weight") else { return false }
        let lower = name.lowercased()
        if embeddingMarkers.contains(where: { lower.contains($0) }) { return false }
        if headNames.contains(name) || name.hasSuffix(".lm_head.weight") { return false }
        if lower.hasSuffix("norm.weight") || lower.contains("router") || lower.hasSuffix("gate_inp.weight") { return false }
        return true
    }

    /// Whether the user's selection (or the default rule) picks this tensor; dtype and shape are
    /// checked by the caller, which reports why a picked tensor is kept.
    public func picks(_ name: String, shape: [UInt64]) -> Bool {
        (selection.include.isEmpty ? QuantizeTargets.isDefaultTarget(name, shape: shape) : true) && selection.selects(name)
    }
}
