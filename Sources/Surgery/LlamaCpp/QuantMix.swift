/// llama-quantize's file types ("mixes"): each tensor's ggml type chosen as llama.cpp's
/// `llama_tensor_get_type` chooses it for a dense model (n_expert <= 1, not falcon): which tensors
/// may be quantized, the output / token-embedding rules, the attn_v / attn_output / ffn_down rules by
/// layer position and GQA, and the fallback when a row does not divide into the type's blocks.
public struct QuantMix: Sendable, Equatable {
    public enum FileType: String, Sendable, CaseIterable {
        case q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k_s, q3_k_m, q3_k_l, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k
    }
    public let fileType: FileType

    /// llama-quantize's names, case-insensitive; q3_k, q4_k and q5_k are its aliases of the _m mixes.
    public init?(_ name: String) {
        let n = name.lowercased()
        let aliases = ["q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"]
        guard let f = FileType(rawValue: aliases[n] ?? n) else { return nil }
        fileType = f
    }

    public static let names = FileType.allCases.map(\.rawValue)

    /// `general.file_type` (llama_ftype).
    public var llamaFileType: UInt32 {
        switch fileType {
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 7
        case .q5_0: return 8
        case .q5_1: return 9
        case .q2_k: return 10
        case .q3_k_s: return 11
        case .q3_k_m: return 12
        case .q3_k_l: return 13
        case .q4_k_s: return 14
        case .q4_k_m: return 15
        case .q5_k_s: return 16
        case .q5_k_m: return 17
        case .q6_k: return 18
        }
    }

    /// `llama_ftype_get_default_type`.
    public var defaultType: GGMLType {
        switch fileType {
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .q5_0: return .q5_0
        case .q5_1: return .q5_1
        case .q8_0: return .q8_0
        case .q2_k: return .q2_k
        case .q3_k_s, .q3_k_m, .q3_k_l: return .q3_k
        case .q4_k_s, .q4_k_m: return .q4_k
        case .q5_k_s, .q5_k_m: return .q5_k
        case .q6_k: return .q6_k
        }
    }

    /// The model facts the rules read.
    public struct Model: Sendable {
        public var layers: Int
        public var heads: Int
        public var kvHeads: Int
        /// No tensor named output.weight: token_embd is also the output projection.
        public var tiedEmbeddings: Bool
        public var arch: String
        /// An importance matrix is given (llama-quantize's has_imatrix changes the Q4_0/Q5_0 rules).
        public var hasImatrix: Bool
        public init(layers: Int, heads: Int, kvHeads: Int, tiedEmbeddings: Bool, arch: String, hasImatrix: Bool = false) {
            self.layers = layers; self.heads = heads; self.kvHeads = kvHeads; self.tiedEmbeddings = tiedEmbeddings; self.arch = arch
            self.hasImatrix = hasImatrix
        }
    }

    /// Whether llama-quantize quantizes this tensor at all (`tensor_allows_quantization`, the names
    /// that occur in llama/qwen models): matrices whose name ends in "weight", not norms or routers.
    public static func allowsQuantization(_ ggufName: String, dimensions: Int) -> Bool {
        guard dimensions >= 2, ggufName.hasSuffix("weight"), !ggufName.contains("_norm.weight") else { return false }
        let never = ["ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj", "ssm_conv1d",
                     "shortconv.conv.weight", ".position_embd", "attn_rel_b.weight", ".rel_pos", ".patch_embd", ".patch_merger"]
        return !never.contains { ggufName.contains($0) } && ggufName != "position_embd.weight" && ggufName != "token_types.weight"
    }

    /// The type of one quantizable tensor and the rule that chose it; nil type (with the reason) where
    /// llama-quantize stops with "no tensor type fallback is defined".
    /// - Parameters:
    ///   - ggufName: llama.cpp's name (blk.N.attn_v.weight, token_embd.weight, ...).
    ///   - rowLength: ne[0], the tensor's last dimension (input features).
    public func type(for ggufName: String, rowLength: Int, model: Model) -> (type: GGMLType?, rule: String) {
        let n = model.layers
        let layer = QuantMix.layer(ggufName)
        let gqa = model.kvHeads > 0 ? model.heads / model.kvHeads : 1
        func moreBits(_ i: Int) -> Bool { i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2 }
        var chosen = defaultType, rule = "default type of \(fileType.rawValue)"
        let isOutput = ggufName == "output.weight" || (model.tiedEmbeddings && ggufName == "token_embd.weight")
        if isOutput {
            if rowLength % defaultType.blockSize != 0 {
                chosen = .q8_0; rule = "output: row of \(rowLength) does not divide into \(defaultType.name) blocks"
            } else if defaultType != .q8_0 {
                chosen = .q6_k; rule = model.tiedEmbeddings && ggufName == "token_embd.weight" ? "output (tied token_embd): q6_k" : "output: q6_k"
            } else {
                rule = "output: q8_0"
            }
        } else if ggufName == "token_embd.weight" {
            rule = "token_embd: default type"
        } else if ggufName.contains("attn_v.weight") {
            let i = layer ?? 0
            switch fileType {
            case .q2_k: chosen = gqa >= 4 ? .q4_k : .q3_k; rule = "attn_v: n_gqa \(gqa) \(gqa >= 4 ? ">= 4" : "< 4")"
            case .q3_k_m: chosen = i < 2 ? .q5_k : .q4_k; rule = "attn_v: layer \(i) \(i < 2 ? "< 2" : ">= 2")"
            case .q3_k_l: chosen = .q5_k; rule = "attn_v: q3_k_l"
            case .q4_k_s: chosen = i < 4 ? .q5_k : .q4_k; rule = "attn_v: layer \(i) \(i < 4 ? "< 4" : ">= 4")"
            case .q4_k_m, .q5_k_m:
                let more = moreBits(i)
                chosen = more ? .q6_k : defaultType; rule = "attn_v: use_more_bits(\(i), \(n)) \(more)"
            default: rule = "attn_v: default type"
            }
            if model.arch == "llama" && n == 80 && model.heads != model.kvHeads && (chosen == .q3_k || chosen == .q4_k) {
                chosen = .q5_k; rule += "; LLaMA-70B: q5_k"
            }
        } else if ggufName.contains("ffn_down") {
            let i = layer ?? 0
            switch fileType {
            case .q2_k, .q3_k_s: chosen = .q3_k; rule = "ffn_down: q3_k"
            case .q3_k_m: chosen = i < n / 16 ? .q5_k : .q4_k; rule = "ffn_down: layer \(i) \(i < n / 16 ? "<" : ">=") n/16"
            case .q3_k_l: chosen = .q5_k; rule = "ffn_down: q3_k_l"
            case .q4_k_s: chosen = i < n / 8 ? .q5_k : .q4_k; rule = "ffn_down: layer \(i) \(i < n / 8 ? "<" : ">=") n/8"
            case .q4_k_m, .q5_k_m:
                let more = moreBits(i)
                chosen = more ? .q6_k : defaultType; rule = "ffn_down: use_more_bits(\(i), \(n)) \(more)"
            case .q4_0 where model.hasImatrix && i < n / 8: chosen = .q4_1; rule = "ffn_down: imatrix and layer \(i) < n/8"
            case .q5_0 where model.hasImatrix && i < n / 8: chosen = .q5_1; rule = "ffn_down: imatrix and layer \(i) < n/8"
            default: rule = "ffn_down: default type"
            }
        } else if ggufName.contains("attn_output.weight") {
            switch fileType {
            case .q2_k: chosen = .q3_k; rule = "attn_output: q3_k"
            case .q3_k_m: chosen = .q4_k; rule = "attn_output: q4_k"
            case .q3_k_l: chosen = .q5_k; rule = "attn_output: q5_k"
            default: rule = "attn_output: default type"
            }
        }
        if rowLength % chosen.blockSize != 0 {
            let fallback: GGMLType
            switch chosen {
            case .q2_k, .q3_k: fallback = .q4_0
            case .q4_k: fallback = .q5_0
            case .q5_k: fallback = .q5_1
            case .q6_k: fallback = .q8_0
            default: return (nil, "row of \(rowLength) does not divide into \(chosen.name) blocks and llama-quantize defines no fallback for it")
            }
            let final = rowLength % fallback.blockSize == 0 ? fallback : .f16
            rule += "; row of \(rowLength) does not divide into \(chosen.name) blocks: \(final.name)"
            chosen = final
        }
        return (chosen, rule)
    }

    /// N in "blk.N.".
    static func layer(_ name: String) -> Int? {
        guard name.hasPrefix("blk.") else { return nil }
        return Int(name.dropFirst(4).prefix { $0 != "." })
    }
}
