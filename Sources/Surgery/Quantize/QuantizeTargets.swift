import SafeTensors

/// Which tensors `wtool quantize` touches. By default the 2-D weight matrices, except embeddings
/// and the output head (llama-quantize and llm-compressor keep those at high precision: they are
/// few, large-error and looked up or used once) — norms and biases are 1-D and always kept.
/// `--include` replaces the default set, `--exclude` removes from it.
public struct QuantizeTargets: Sendable {
    public let selection: TensorSelection
    /// Every float matrix by default, embeddings and output head included (float GGUFs).
    public var allMatrices = false
    public init(selection: TensorSelection, allMatrices: Bool = false) { self.selection = selection; self.allMatrices = allMatrices }

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
        let byDefault = allMatrices ? shape.count >= 2 && name.hasSuffix("weight") && !name.lowercased().hasSuffix("norm.weight")
                                    : QuantizeTargets.isDefaultTarget(name, shape: shape)
        return (selection.include.isEmpty ? byDefault : true) && selection.selects(name)
    }
}
