/// llama.cpp's tensor names for the LLaMA family (llama, mistral, qwen2, qwen3), from Hugging Face's.
public enum GGUFNames {
    static let layerParts: [(String, String)] = [
        ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"), ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"), ("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
        ("self_attn.q_norm", "attn_q_norm"), ("self_attn.k_norm", "attn_k_norm"),
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

    /// The Hugging Face name of a llama.cpp tensor name (the inverse of `gguf(forHF:)`).
    public static func hf(forGGUF name: String) -> String? {
        switch name {
        case "token_embd.weight": return "model.embed_tokens.weight"
        case "output.weight": return "lm_head.weight"
        case "output_norm.weight": return "model.norm.weight"
        default: break
        }
        let p = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard p.count >= 3, p[0] == "blk", let layer = Int(p[1]), layer >= 0 else { return nil }
        let rest = p[2...].joined(separator: ".")
        for (hf, g) in layerParts where rest.hasPrefix(g + ".") {
            return "model.layers.\(layer).\(hf)" + rest.dropFirst(g.count)
        }
        return nil
    }
}
