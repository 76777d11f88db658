import SafeTensors
import Foundation

/// How a llama.cpp GGUF of the LLaMA family (llama, which mistral files also are, qwen2, qwen3)
/// maps back to a Hugging Face model: each tensor's name, the Q/K rows convert_hf_to_gguf
/// permuted for llama, and config.json rebuilt from the hyper-parameters. The inverse of
/// `LlamaCppExport`; tensors wtool does not know are an error naming them, never dropped.
public struct GGUFModelImport: Sendable {
    public struct Tensor: Sendable {
        public let gguf: GGUFFile.Tensor
        public let hfName: String
        public let type: GGMLType
        /// Heads whose rows convert interleaved (llama's q_proj / k_proj); nil: rows as stored.
        public let unpermuteHeads: Int?
        public var shape: [UInt64] { gguf.shape }
    }

    public let arch: String
    public let tensors: [Tensor]
    /// config.json without its dtype (the caller sets the dtype it writes).
    public let config: [(String, JSONValue)]
    public let warnings: [String]

    public init(_ file: GGUFFile) throws {
        let path = file.path
        guard let arch = file.value("general.architecture")?.string else { throw FormatError(file: path, "no general.architecture key: not a model GGUF") }
        guard ["llama", "qwen2", "qwen3"].contains(arch) else {
            throw FormatError(file: path, "architecture '\(arch)' is not one wtool imports (llama, which includes mistral, qwen2, qwen3)")
        }
        self.arch = arch
        func int(_ key: String) -> Int? { file.value("\(arch).\(key)")?.integer }
        func float(_ key: String) -> Double? {
            switch file.value("\(arch).\(key)") {
            case let .float32(v)?: return Double(v)
            case let .float64(v)?: return v
            default: return nil
            }
        }
        func need(_ key: String) throws -> Int {
            guard let v = int(key) else { throw FormatError(file: path, "no \(arch).\(key) key (needed for config.json)") }
            return v
        }
        let heads = try need("attention.head_count"), kvHeads = int("attention.head_count_kv") ?? heads
        let hidden = try need("embedding_length"), layers = try need("block_count")
        guard heads > 0, kvHeads > 0, hidden % heads == 0 else { throw FormatError(file: path, "embedding_length \(hidden) is not a multiple of head_count \(heads)") }
        let headDim = int("attention.key_length") ?? hidden / heads
        guard let eps = float("attention.layer_norm_rms_epsilon") else { throw FormatError(file: path, "no \(arch).attention.layer_norm_rms_epsilon key (needed for config.json)") }
        var warnings: [String] = []
        var tensors: [Tensor] = []
        var hasBias = false, hasOutput = false
        var ropeFreqs: GGUFFile.Tensor? = nil
        for t in file.tensors {
            if t.name == "rope_freqs.weight" { ropeFreqs = t; continue }
            guard let hf = GGUFNames.hf(forGGUF: t.name) else {
                throw FormatError(file: path, tensor: t.name, "not a tensor of the \(arch) architecture that wtool maps back to Hugging Face names")
            }
            guard let type = GGMLType.decodable(id: t.type) else {
                throw FormatError(file: path, tensor: t.name, "ggml type \(t.type) (\(GGUFModelImport.typeName(t.type))) is not one wtool decodes (\(GGMLType.decodable.map(\.name).joined(separator: ", ")))")
            }
            guard let rowLength = t.dims.first, rowLength % UInt64(type.blockSize) == 0 else {
                throw FormatError(file: path, tensor: t.name, "rows of \(t.dims.first ?? 0) values do not divide into \(type.name) blocks of \(type.blockSize)")
            }
            if t.name.hasSuffix("attn_q.bias") { hasBias = true }
            if t.name == "output.weight" { hasOutput = true }
            var permute: Int? = nil
            if arch == "llama" {
                if t.name.hasSuffix(".attn_q.weight") || t.name.hasSuffix(".attn_q.bias") { permute = heads }
                if t.name.hasSuffix(".attn_k.weight") || t.name.hasSuffix(".attn_k.bias") { permute = kvHeads }
                if let h = permute, (t.shape.first ?? 0) % UInt64(2 * h) != 0 {
                    throw FormatError(file: path, tensor: t.name, "\(t.shape.first ?? 0) rows do not split into \(h) heads of rotary pairs")
                }
            }
            tensors.append(Tensor(gguf: t, hfName: hf, type: type, unpermuteHeads: permute))
        }
        guard let embedding = tensors.first(where: { $0.hfName == "model.embed_tokens.weight" }) else {
            throw FormatError(file: path, "no token_embd.weight tensor")
        }
        self.tensors = tensors
        let modelType = arch
        let className = ["llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"][arch]!
        var c: [(String, JSONValue)] = [
            ("architectures", .array([.string(className)])),
            ("model_type", .string(modelType)),
            ("hidden_size", .int(hidden)),
            ("intermediate_size", .int(try need("feed_forward_length"))),
            ("num_hidden_layers", .int(layers)),
            ("num_attention_heads", .int(heads)),
            ("num_key_value_heads", .int(kvHeads)),
            ("head_dim", .int(headDim)),
            ("max_position_embeddings", .int(try need("context_length"))),
            ("rms_norm_eps", .double(Double(Float(eps).description)!)),
            ("rope_theta", .double(float("rope.freq_base").map { Double(Float($0).description)! } ?? 10000)),
            ("vocab_size", .uint(embedding.shape.first ?? 0)),
            ("tie_word_embeddings", .bool(!hasOutput)),
            ("hidden_act", .string("silu")),
        ]
        if arch == "llama" { c += [("attention_bias", .bool(hasBias)), ("mlp_bias", .bool(false))] }
        for (key, id) in [("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")] {
            if let v = file.value(id)?.integer { c.append((key, .int(v))) }
        }
        if let scaling = try GGUFModelImport.ropeScaling(file, arch: arch, headDim: headDim, ropeFreqs: ropeFreqs, warnings: &warnings) {
            c.append(("rope_scaling", scaling))
        }
        config = c
        self.warnings = warnings
    }

    /// RoPE scaling keys back to config.json's `rope_scaling`; llama3's is recovered from the
    /// `rope_freqs` factors (convert computed them from factor, low/high_freq_factor and the
    /// original context; with that context fixed at 8192, Llama 3's, the other three follow from
    /// the factors, and are checked by recomputing every factor).
    static func ropeScaling(_ file: GGUFFile, arch: String, headDim: Int, ropeFreqs: GGUFFile.Tensor?, warnings: inout [String]) throws -> JSONValue? {
        func f(_ k: String) -> Double? {
            if case let .float32(v)? = file.value("\(arch).rope.scaling.\(k)") { return Double(Float(v).description)! }
            return nil
        }
        let type = file.value("\(arch).rope.scaling.type")?.string
        switch type {
        case "linear"?:
            guard let factor = f("factor") else { throw FormatError(file: file.path, "linear rope scaling without a factor") }
            return .object([("rope_type", .string("linear")), ("factor", .double(factor))])
        case "yarn"?:
            guard let factor = f("factor") else { throw FormatError(file: file.path, "yarn rope scaling without a factor") }
            var o: [(String, JSONValue)] = [("rope_type", .string("yarn")), ("factor", .double(factor))]
            if let n = file.value("\(arch).rope.scaling.original_context_length")?.integer { o.append(("original_max_position_embeddings", .int(n))) }
            for (g, hf) in [("yarn_ext_factor", "extrapolation_factor"), ("yarn_attn_factor", "attention_factor"),
                            ("yarn_beta_fast", "beta_fast"), ("yarn_beta_slow", "beta_slow")] {
                if let v = f(g) { o.append((hf, .double(v))) }
            }
            return .object(o)
        case nil, "none"?:
            break
        default:
            warnings.append("\(file.path): rope scaling '\(type!)' is not written to config.json (llama.cpp-specific)")
        }
        guard let ropeFreqs else { return nil }
        let factors = try file.floats(ropeFreqs)
        let theta: Double = { if case let .float32(v)? = file.value("\(arch).rope.freq_base") { return Double(v) }; return 10000 }()
        guard factors.count == headDim / 2, let top = factors.max(), top > 1 else {
            throw FormatError(file: file.path, tensor: ropeFreqs.name, "\(factors.count) frequency factors for head_dim \(headDim): not llama3 rope scaling")
        }
        let L = 8192.0
        let wavelengths = (0..<factors.count).map { 2 * Double.pi * pow(theta, Double(2 * $0) / Double(headDim)) }
        let between = factors.indices.filter { factors[$0] != 1 && factors[$0] != top }
        let factor = Double(top)
        // s = (L/λ - low) / (high - low), with 1/v = (1 - s)/factor + s for a factor v in between.
        var low: Double, high: Double
        if between.count >= 2, let a = between.first, let b = between.last {
            let s = { (i: Int) in (1 / Double(factors[i]) - 1 / factor) / (1 - 1 / factor) }
            let slope = (s(a) - s(b)) / (L / wavelengths[a] - L / wavelengths[b])  // 1 / (high - low)
            low = (L / wavelengths[a]) - s(a) / slope
            high = low + 1 / slope
        } else if between.count == 1, let i = between.first {
            // one point between: put the lower cut-off halfway to the neighbouring full factor,
            // the upper one follows from that point's factor (or the other way round)
            let s = (1 / Double(factors[i]) - 1 / factor) / (1 - 1 / factor)
            let x = L / wavelengths[i]
            low = i + 1 < factors.count ? (L / wavelengths[i + 1] + x) / 2 : x / 2
            high = low + (x - low) / s
            if i > 0, high >= L / wavelengths[i - 1] {
                high = (L / wavelengths[i - 1] + x) / 2
                low = (x - s * high) / (1 - s)
            }
        } else if between.isEmpty, let lastOne = factors.lastIndex(of: 1), lastOne + 1 < factors.count {
            // a step from 1 to factor: put both cut-offs between the two wavelengths
            let mid = (wavelengths[lastOne] + wavelengths[lastOne + 1]) / 2
            high = L / mid * 1.0001
            low = L / mid * 0.9999
        } else {
            throw FormatError(file: file.path, tensor: ropeFreqs.name, "these frequency factors do not determine llama3 rope scaling")
        }
        // Written to 6 decimals (what a config author writes: 1.0, 4.0), then checked as written.
        low = (low * 1e6).rounded() / 1e6
        high = (high * 1e6).rounded() / 1e6
        let back = LlamaCppExport.llama3Factors(theta: theta, headDim: headDim, factor: factor, low: low, high: high, original: L)
        guard zip(back, factors).allSatisfy({ abs($0 - $1) <= 1e-5 * $1 }) else {
            throw FormatError(file: file.path, tensor: ropeFreqs.name, "these frequency factors are not llama3 rope scaling's")
        }
        return .object([("rope_type", .string("llama3")), ("factor", .double(factor)), ("low_freq_factor", .double(low)),
                        ("high_freq_factor", .double(high)), ("original_max_position_embeddings", .int(Int(L)))])
    }

    /// Names of the ggml types wtool does not decode, for the error message.
    static func typeName(_ id: UInt32) -> String {
        let names: [UInt32: String] = [16: "iq2_xxs", 17: "iq2_xs", 18: "iq3_xxs", 19: "iq1_s", 20: "iq4_nl", 21: "iq3_s", 22: "iq2_s",
                                       23: "iq4_xs", 29: "iq1_m", 39: "mxfp4", 15: "q8_k", 9: "q8_1", 24: "i8", 25: "i16", 26: "i32",
                                       27: "i64", 28: "f64"]
        return names[id] ?? "unknown"
    }
}
