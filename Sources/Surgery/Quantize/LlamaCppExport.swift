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

    public init(configPath: String) throws {
        guard case let .object(c) = try JSONParser.parse(try FileSystem.readAll(configPath)) else {
            throw FormatError(file: configPath, "not a JSON object")
        }
        func value(_ k: String) -> JSONValue? { c.first { $0.0 == k }?.1 }
        func int(_ k: String) throws -> Int {
            guard let v = value(k)?.doubleValue, v >= 0, v == v.rounded() else {
                throw FormatError(file: configPath, "needs an integer '\(k)' for llama.cpp's hyper-parameters")
            }
            return Int(v)
        }
        let modelType = value("model_type")?.stringValue ?? ""
        switch modelType {
        case "llama", "mistral": arch = "llama"
        case "qwen2": arch = "qwen2"
        default: throw FormatError(file: configPath, "model_type '\(modelType)' is not one --llama-cpp maps (llama, mistral, qwen2)")
        }
        heads = try int("num_attention_heads")
        kvHeads = value("num_key_value_heads") == nil || value("num_key_value_heads") == .null ? heads : try int("num_key_value_heads")
        let hidden = try int("hidden_size")
        guard heads > 0, kvHeads > 0, hidden % heads == 0 else { throw FormatError(file: configPath, "hidden_size is not a multiple of num_attention_heads") }
        let headDim = value("head_dim")?.doubleValue.map { Int($0) } ?? hidden / heads
        var kv: [(String, GGUFValue)] = [
            ("\(arch).context_length", .uint32(UInt32(try int("max_position_embeddings")))),
            ("\(arch).embedding_length", .uint32(UInt32(hidden))),
            ("\(arch).block_count", .uint32(UInt32(try int("num_hidden_layers")))),
            ("\(arch).feed_forward_length", .uint32(UInt32(try int("intermediate_size")))),
            ("\(arch).attention.head_count", .uint32(UInt32(heads))),
            ("\(arch).attention.head_count_kv", .uint32(UInt32(kvHeads))),
            ("\(arch).attention.layer_norm_rms_epsilon", .float32(Float(value("rms_norm_eps")?.doubleValue ?? 1e-6))),
            ("\(arch).rope.freq_base", .float32(Float(value("rope_theta")?.doubleValue ?? 10000))),
            ("\(arch).rope.dimension_count", .uint32(UInt32(headDim))),
            ("\(arch).vocab_size", .uint32(UInt32(try int("vocab_size")))),
            ("tokenizer.ggml.model", .string("none")),
        ]
        if let k = value("head_dim")?.doubleValue {
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
