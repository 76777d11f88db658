import SafeTensors
import Foundation

/// What llama.cpp needs beyond the tensors to load a LLaMA-family GGUF (llama, mistral, qwen2,
/// qwen3), as convert_hf_to_gguf writes it: its tensor names, the architecture's hyper-parameters,
/// RoPE scaling (keys, or llama3's `rope_freqs` tensor), and for llama/mistral the Q/K row order
/// (`LlamaModel.permute`: rotary pairs interleaved, rows reshaped (heads, 2, head_dim/2) ->
/// (heads, head_dim/2, 2)). The tokenizer keys come from `GGUFTokenizer`.
public struct LlamaCppExport: Sendable {
    public let arch: String
    let heads: Int
    let kvHeads: Int
    /// num_hidden_layers (block_count).
    let layers: Int
    public let vocabularySize: Int?
    public let metadata: [(String, GGUFValue)]
    /// llama3 RoPE scaling: the per-frequency divisors convert writes as `rope_freqs.weight` (F32).
    public let ropeFrequencyFactors: [Float]?
    /// config.json's tie_word_embeddings (llama.cpp then uses token_embd as the output projection).
    public let tiedEmbeddings: Bool

    /// Reads the hyper-parameters from config.json in either transformers layout; a value
    /// llama.cpp needs that the config does not give is an error naming the key, never a default.
    public init(config: ModelConfig) throws {
        let need = "for llama.cpp's hyper-parameters"
        let modelType = config.string("model_type") ?? ""
        switch modelType {
        case "llama", "mistral": arch = "llama"
        case "qwen2": arch = "qwen2"
        case "qwen3": arch = "qwen3"
        default: throw FormatError(file: config.path, "model_type '\(modelType)' is not one --llama-cpp maps (llama, mistral, qwen2, qwen3)")
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
        vocabularySize = try config.int("vocab_size")
        layers = try config.requiredInt("num_hidden_layers", for: need)
        tiedEmbeddings = config["tie_word_embeddings"] == .bool(true)
        var kv: [(String, GGUFValue)] = [
            ("\(arch).block_count", .uint32(UInt32(layers))),
            ("\(arch).context_length", .uint32(UInt32(try config.requiredInt("max_position_embeddings", for: need)))),
            ("\(arch).embedding_length", .uint32(UInt32(hidden))),
            ("\(arch).feed_forward_length", .uint32(UInt32(try config.requiredInt("intermediate_size", for: need)))),
            ("\(arch).attention.head_count", .uint32(UInt32(heads))),
            ("\(arch).attention.head_count_kv", .uint32(UInt32(kvHeads))),
            ("\(arch).rope.freq_base", .float32(Float(theta))),
            ("\(arch).attention.layer_norm_rms_epsilon", .float32(Float(eps))),
        ]
        if let k = try config.int("head_dim") {
            kv.append(("\(arch).attention.key_length", .uint32(UInt32(k))))
            kv.append(("\(arch).attention.value_length", .uint32(UInt32(k))))
        }
        if arch == "llama" {   // convert writes these two for the llama architecture only
            guard let v = vocabularySize else { throw FormatError(file: config.path, "needs 'vocab_size' \(need)") }
            kv.append(("llama.vocab_size", .uint32(UInt32(v))))
            kv.append(("llama.rope.dimension_count", .uint32(UInt32(headDim))))
        }
        var factors: [Float]? = nil
        if let scaling = config.ropeScaling {
            let fields = Dictionary(scaling, uniquingKeysWith: { _, b in b })
            let type = (fields["rope_type"] ?? fields["type"])?.stringValue ?? ""
            func number(_ k: String) -> Double? { fields[k]?.doubleValue }
            switch type {
            case "linear":
                guard let f = number("factor") else { throw FormatError(file: config.path, "linear rope scaling needs 'factor'") }
                kv += [("\(arch).rope.scaling.type", .string("linear")), ("\(arch).rope.scaling.factor", .float32(Float(f)))]
            case "yarn":
                guard let f = number("factor") else { throw FormatError(file: config.path, "yarn rope scaling needs 'factor'") }
                kv += [("\(arch).rope.scaling.type", .string("yarn")), ("\(arch).rope.scaling.factor", .float32(Float(f)))]
                guard let original = fields["original_max_position_embeddings"]?.uint64Value else {
                    throw FormatError(file: config.path, "yarn rope scaling needs 'original_max_position_embeddings'")
                }
                kv.append(("\(arch).rope.scaling.original_context_length", .uint32(UInt32(original))))
                for (key, names) in [("yarn_ext_factor", ["extrapolation_factor"]), ("yarn_attn_factor", ["attention_factor", "attn_factor"]),
                                     ("yarn_beta_fast", ["beta_fast"]), ("yarn_beta_slow", ["beta_slow"])] {
                    if let v = names.lazy.compactMap(number).first { kv.append(("\(arch).rope.scaling.\(key)", .float32(Float(v)))) }
                }
            case "su", "longrope":
                kv.append(("\(arch).rope.scaling.type", .string("longrope")))
            case "llama3":
                factors = LlamaCppExport.llama3Factors(theta: theta, headDim: headDim, factor: number("factor") ?? 8,
                                                       low: number("low_freq_factor") ?? 1, high: number("high_freq_factor") ?? 4,
                                                       original: try config.double("original_max_position_embeddings") ?? 8192)
            case "dynamic":
                break   // convert writes nothing for it either
            default:
                throw FormatError(file: config.path, "rope scaling '\(type)' is not one --llama-cpp converts (linear, yarn, longrope, llama3)")
            }
        }
        ropeFrequencyFactors = factors
        metadata = kv
    }

    /// llama3 RoPE: for each rotary frequency f = theta^(-i/d), i = 0, 2, ..., d-2, with wavelength
    /// λ = 2π/f: 1 below L/high, `factor` above L/low, and in between 1 / ((1 - s)/factor + s)
    /// with s = (L/λ - low)/(high - low); L is the top-level original_max_position_embeddings
    /// (convert's reading, default 8192). In f64, rounded to f32.
    static func llama3Factors(theta: Double, headDim d: Int, factor: Double, low: Double, high: Double, original L: Double) -> [Float] {
        stride(from: 0, to: d, by: 2).map { i in
            let f = 1 / pow(theta, Double(i) / Double(d)), wavelength = 2 * Double.pi / f
            if wavelength < L / high { return 1 }
            if wavelength > L / low { return Float(factor) }
            let s = (L / wavelength - low) / (high - low)
            return Float(1 / ((1 - s) / factor + s))
        }
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
