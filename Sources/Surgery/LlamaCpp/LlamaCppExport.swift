import SafeTensors

/// What llama.cpp needs beyond the tensors to load a LLaMA-family GGUF (llama, mistral, qwen2):
/// its tensor names, the architecture's hyper-parameters, and for llama/mistral the Q/K row
/// order of `convert_hf_to_gguf.py` (`LlamaModel.permute`: rotary pairs interleaved, rows
/// reshaped (heads, 2, head_dim/2) -> (heads, head_dim/2, 2)). The tokenizer is not converted:
/// the file declares `tokenizer.ggml.model = "none"` and the vocabulary size, which llama.cpp
/// accepts (it then runs on token ids).
public struct LlamaCppExport: Sendable {
    public let arch: String
    let heads: Int
    let kvHeads: Int
    public let metadata: [(String, GGUFValue)]

    /// Reads the hyper-parameters from config.json in either transformers layout; a value
    /// llama.cpp needs that the config does not give is an error naming the key, never a default.
    public init(config: ModelConfig) throws {
        let need = "for llama.cpp's hyper-parameters"
        let modelType = config.string("model_type") ?? ""
        switch modelType {
        case "llama", "mistral": arch = "llama"
        case "qwen2": arch = "qwen2"
        default: throw FormatError(file: config.path, "model_type '\(modelType)' is not one --llama-cpp maps (llama, mistral, qwen2)")
        }
        heads = try config.requiredInt("num_attention_heads", for: need)
        kvHeads = try config.int("num_key_value_heads") ?? heads
        let hidden = try config.requiredInt("hidden_size", for: need)
        guard heads > 0, kvHeads > 0, hidden % heads == 0 else { throw FormatError(file: config.path, "hidden_size is not a multiple of num_attention_heads") }
        let headDim = try config.int("head_dim") ?? hidden / heads
        guard let eps = try config.double("rms_norm_eps") else { throw FormatError(file: config.path, "needs 'rms_norm_eps' \(need)") }
        guard let theta = try config.ropeTheta() else {
            throw FormatError(file: config.path, "needs 'rope_theta' (or 'rope_parameters.rope_theta') \(need)")
        }
        var kv: [(String, GGUFValue)] = [
            ("\(arch).context_length", .uint32(UInt32(try config.requiredInt("max_position_embeddings", for: need)))),
            ("\(arch).embedding_length", .uint32(UInt32(hidden))),
            ("\(arch).block_count", .uint32(UInt32(try config.requiredInt("num_hidden_layers", for: need)))),
            ("\(arch).feed_forward_length", .uint32(UInt32(try config.requiredInt("intermediate_size", for: need)))),
            ("\(arch).attention.head_count", .uint32(UInt32(heads))),
            ("\(arch).attention.head_count_kv", .uint32(UInt32(kvHeads))),
            ("\(arch).attention.layer_norm_rms_epsilon", .float32(Float(eps))),
            ("\(arch).rope.freq_base", .float32(Float(theta))),
            ("\(arch).rope.dimension_count", .uint32(UInt32(headDim))),
            ("\(arch).vocab_size", .uint32(UInt32(try config.requiredInt("vocab_size", for: need)))),
            ("tokenizer.ggml.model", .string("none")),
        ]
        if let scaling = config.ropeScaling {
            // convert_hf_to_gguf writes linear scaling as two keys; the other types need tensors
            // (llama3's rope_freqs) or keys wtool does not write yet: refused, never dropped.
            let fields = Dictionary(scaling, uniquingKeysWith: { _, b in b })
            let type = (fields["rope_type"] ?? fields["type"])?.stringValue ?? ""
            guard type == "linear", let factor = fields["factor"]?.doubleValue else {
                throw FormatError(file: config.path, "rope scaling '\(type)' is not supported by --llama-cpp (only linear); the GGUF would rotate long prompts wrongly")
            }
            kv.append(("\(arch).rope.scaling.type", .string("linear")))
            kv.append(("\(arch).rope.scaling.factor", .float32(Float(factor))))
        }
        if let k = try config.int("head_dim") {
            kv.append(("\(arch).attention.key_length", .uint32(UInt32(k))))
            kv.append(("\(arch).attention.value_length", .uint32(UInt32(k))))
        }
        metadata = kv
    }

    /// llama.cpp's name for a Hugging Face tensor (nil: none known).
    public func name(forHF name: String) -> String? { GGUFNames.gguf(forHF: name) }

    /// Heads whose rows are re-ordered for llama.cpp's rotary layout (q_proj, k_proj of llama/mistral).
    public func permutedHeads(forHF name: String) -> Int? {
        guard arch == "llama" else { return nil }
        if name.hasSuffix("self_attn.q_proj.weight") || name.hasSuffix("self_attn.q_proj.bias") { return heads }
        if name.hasSuffix("self_attn.k_proj.weight") || name.hasSuffix("self_attn.k_proj.bias") { return kvHeads }
        return nil
    }

    /// Row r = h·hd + i·2 + j of the result is row h·hd + j·hd/2 + i of the input.
    public static func permuteRows(_ x: [Float], rows: Int, cols: Int, heads: Int) -> [Float]? {
        guard heads > 0, rows % (2 * heads) == 0 else { return nil }
        let hd = rows / heads, half = hd / 2
        var out = [Float](repeating: 0, count: x.count)
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    let dst = (h * hd + i * 2 + j) * cols, src = (h * hd + j * half + i) * cols
                    for c in 0..<cols { out[dst + c] = x[src + c] }
                }
            }
        }
        return out
    }
}
