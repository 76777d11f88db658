import SafeTensors

/// The specs wtool infers: MLP chains from names and shapes, and the transformer families from
/// `config.json` (reference tables: permute-match notes §1.6, §3.2-3.5).
public enum BuiltinSpecs {
    typealias Level = PermutationSpec.Level
    typealias Axis = PermutationSpec.Axis

    /// The spec for `checkpoint`, or an error saying why none can be inferred.
    public static func infer(_ checkpoint: Checkpoint) throws -> PermutationSpec {
        if let config = try readConfig(checkpoint) {
            let type = config["model_type"]?.stringValue ?? ""
            switch type {
            case "llama", "mistral", "qwen2": return try llama(checkpoint, config)
            case "gpt2": return try gpt2(checkpoint, config)
            case "bert", "roberta": return try bert(checkpoint, config)
            default: break
            }
            if let spec = mlp(checkpoint) { return spec }
            throw FormatError(file: checkpoint.path, "config.json model_type '\(type)' has no built-in spec (llama, mistral, qwen2, gpt2, bert, roberta, or an MLP chain); give --spec FILE")
        }
        if let spec = mlp(checkpoint) { return spec }
        let names = checkpoint.tensorNames
        if names.contains(where: { $0.contains("self_attn.q_proj") || $0.contains("attn.c_attn") || $0.contains("attention.self.query") }) {
            throw FormatError(file: checkpoint.path, "a transformer's spec needs its config.json (heads, model_type): pass the model folder, or give --spec FILE")
        }
        throw FormatError(file: checkpoint.path, "no spec can be inferred: the tensors are not an MLP chain (layers.N.weight/bias) and there is no config.json; give --spec FILE")
    }

    static func readConfig(_ c: Checkpoint) throws -> JSONValue? { try ModelConfig.of(c)?.json }

    static func int(_ config: JSONValue, _ key: String, _ c: Checkpoint) throws -> Int {
        guard let v = config[key]?.uint64Value, v > 0 else {
            throw FormatError(file: FileSystem.join(c.folder ?? c.path, "config.json"), "needs a positive integer '\(key)' to build the spec")
        }
        return Int(v)
    }

    // MARK: - MLP chains

    /// `layers.N.weight` / `bias` (also `fc1`, `linear.2`, `net.0` ...): every tensor one Linear
    /// of one chain, outputs of layer k feeding layer k+1; the last layer's outputs stay.
    public static func mlp(_ c: Checkpoint) -> PermutationSpec? {
        var layers: [(n: Int, base: String)] = []
        var stem: String?
        for e in c.entries {
            let name = e.name
            let base: Substring
            if name.hasSuffix(".weight") { base = name.dropLast(7) } else if name.hasSuffix(".bias") { base = name.dropLast(5) } else { return nil }
            let digits = base.reversed().prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let n = Int(String(digits.reversed())) else { return nil }
            let s = String(base.dropLast(digits.count))
            if stem == nil { stem = s } else if stem != s { return nil }
            if !layers.contains(where: { $0.n == n }) { layers.append((n, String(base))) }
        }
        guard layers.count >= 2 else { return nil }
        layers.sort { $0.n < $1.n }
        var spaces: [(name: String, size: Int)] = []
        var tensors: [PermutationSpec.TensorAxes] = []
        var previous: String? = nil
        var previousOut: Int? = nil
        for (k, layer) in layers.enumerated() {
            guard let w = c.entry(layer.base + ".weight"), w.info.shape.count == 2 else { return nil }
            let out = Int(w.info.shape[0]), inp = Int(w.info.shape[1])
            if let previousOut, previousOut != inp { return nil }
            let last = k == layers.count - 1
            let space = last ? nil : layer.base
            if let space { spaces.append((space, out)) }
            tensors.append(.init(name: w.name, axes: [space.map { Axis([Level(space: $0, size: out)]) }, previous.map { Axis([Level(space: $0, size: inp)]) }]))
            if let b = c.entry(layer.base + ".bias") {
                guard b.info.shape == [UInt64(out)] else { return nil }
                tensors.append(.init(name: b.name, axes: [space.map { Axis([Level(space: $0, size: out)]) }]))
            }
            previous = space
            previousOut = out
        }
        return PermutationSpec(architecture: "mlp", spaces: spaces, tensors: tensors)
    }

    // MARK: - Transformers

    /// A spec under construction: spaces declared once, tensors added only when present.
    struct Builder {
        let checkpoint: Checkpoint
        var spaces: [(name: String, size: Int)] = []
        var tensors: [PermutationSpec.TensorAxes] = []
        mutating func space(_ name: String, _ size: Int) -> Level {
            if !spaces.contains(where: { $0.name == name }) { spaces.append((name, size)) }
            return Level(space: name, size: size)
        }
        mutating func add(_ name: String, _ axes: Axis?...) {
            if checkpoint.entry(name) != nil { tensors.append(.init(name: name, axes: axes)) }
        }
        func has(_ name: String) -> Bool { checkpoint.entry(name) != nil }
        func dim(_ name: String, _ axis: Int) -> Int? {
            checkpoint.entry(name).flatMap { axis < $0.info.shape.count ? Int($0.info.shape[axis]) : nil }
        }
    }

    static func axis(_ l: Level...) -> Axis { Axis(l) }

    /// LLaMA, Mistral, Qwen2: one residual space for the whole network, one MLP space per layer,
    /// KV groups per layer, query heads inside a group and V/O dims inside a head; Q/K dims
    /// inside a head stay (RoPE pairs dim i with i + head_dim/2, each pair its own frequency).
    static func llama(_ c: Checkpoint, _ config: JSONValue) throws -> PermutationSpec {
        let d = try int(config, "hidden_size", c)
        let heads = try int(config, "num_attention_heads", c)
        let kvHeads = config["num_key_value_heads"]?.uint64Value.map(Int.init) ?? heads
        let hd = config["head_dim"]?.uint64Value.map(Int.init) ?? d / heads
        let layers = try int(config, "num_hidden_layers", c)
        guard kvHeads > 0, heads % kvHeads == 0, hd > 0 else {
            throw FormatError(file: FileSystem.join(c.folder ?? c.path, "config.json"), "num_attention_heads (\(heads)) is not a multiple of num_key_value_heads (\(kvHeads))")
        }
        let rep = heads / kvHeads
        var b = Builder(checkpoint: c)
        let res = b.space("res", d)
        let rope = "RoPE rotates the Q/K dims inside a head"
        b.add("model.embed_tokens.weight", nil, axis(res))
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            let f = try b.dim(p + "mlp.up_proj.weight", 0) ?? int(config, "intermediate_size", c)
            let mlp = b.space("layers.\(l).mlp", f)
            let kv = b.space("layers.\(l).kv", kvHeads)
            let vdim = b.space("layers.\(l).vdim.{0}", hd)
            let q: Axis, o: Axis
            if rep > 1 {
                let qgrp = b.space("layers.\(l).qgrp.{0}", rep)
                q = axis(kv, qgrp, .fixed(hd, why: rope))
                o = axis(kv, qgrp, vdim)
            } else {
                q = axis(kv, .fixed(hd, why: rope))
                o = axis(kv, vdim)
            }
            let k = axis(kv, .fixed(hd, why: rope))
            let v = axis(kv, vdim)
            b.add(p + "input_layernorm.weight", axis(res))
            b.add(p + "self_attn.q_proj.weight", q, axis(res)); b.add(p + "self_attn.q_proj.bias", q)
            b.add(p + "self_attn.k_proj.weight", k, axis(res)); b.add(p + "self_attn.k_proj.bias", k)
            b.add(p + "self_attn.v_proj.weight", v, axis(res)); b.add(p + "self_attn.v_proj.bias", v)
            b.add(p + "self_attn.o_proj.weight", axis(res), o); b.add(p + "self_attn.o_proj.bias", axis(res))
            b.add(p + "post_attention_layernorm.weight", axis(res))
            b.add(p + "mlp.gate_proj.weight", axis(mlp), axis(res)); b.add(p + "mlp.gate_proj.bias", axis(mlp))
            b.add(p + "mlp.up_proj.weight", axis(mlp), axis(res)); b.add(p + "mlp.up_proj.bias", axis(mlp))
            b.add(p + "mlp.down_proj.weight", axis(res), axis(mlp)); b.add(p + "mlp.down_proj.bias", axis(res))
        }
        b.add("model.norm.weight", axis(res))
        b.add("lm_head.weight", nil, axis(res))
        return PermutationSpec(architecture: "llama", spaces: b.spaces, tensors: b.tensors, fixed: ["*.rotary_emb.inv_freq"])
    }

    /// The prefix a task head adds to a base model's names (`transformer.`, `bert.`), if any.
    static func prefix(_ c: Checkpoint, probe: String, candidates: [String]) -> String {
        candidates.first { c.entry($0 + probe) != nil } ?? ""
    }

    /// Q/K dims inside a head are a symmetry of GPT-2 and BERT (learned absolute positions; the same
    /// permutation on Q and K), but coordinate descent from the identity cannot find them together
    /// with the heads: with every dim misaligned a head has no signal to be matched by, and the
    /// descent settles early (measured: planted self-tests fail at every width). Kept in place, Q and K
    /// give the heads a clean signal; a spec file may still add them (a `{0}` family per head).
    static let unmatchedQK = "the built-in spec keeps Q/K dims inside a head (a spec file may move them)"

    /// GPT-2: Conv1D weights are stored (in, out); c_attn's output axis is Q|K|V laid end to end.
    static func gpt2(_ c: Checkpoint, _ config: JSONValue) throws -> PermutationSpec {
        let d = try int(config, "n_embd", c)
        let heads = try int(config, "n_head", c)
        let layers = try int(config, "n_layer", c)
        let hd = d / heads
        let pre = prefix(c, probe: "wte.weight", candidates: ["", "transformer."])
        var b = Builder(checkpoint: c)
        let res = b.space("res", d)
        b.add(pre + "wte.weight", nil, axis(res))
        b.add(pre + "wpe.weight", nil, axis(res))
        for l in 0..<layers {
            let p = pre + "h.\(l)."
            let head = b.space("h.\(l).head", heads)
            let qk = Level.fixed(hd, why: unmatchedQK)
            let vdim = b.space("h.\(l).vdim.{0}", hd)
            let f = b.dim(p + "mlp.c_fc.weight", 1) ?? 4 * d
            let mlp = b.space("h.\(l).mlp", f)
            let qkv = Axis(segments: [[head, qk], [head, qk], [head, vdim]])
            b.add(p + "ln_1.weight", axis(res)); b.add(p + "ln_1.bias", axis(res))
            b.add(p + "attn.c_attn.weight", axis(res), qkv); b.add(p + "attn.c_attn.bias", qkv)
            b.add(p + "attn.c_proj.weight", axis(head, vdim), axis(res)); b.add(p + "attn.c_proj.bias", axis(res))
            b.add(p + "ln_2.weight", axis(res)); b.add(p + "ln_2.bias", axis(res))
            b.add(p + "mlp.c_fc.weight", axis(res), axis(mlp)); b.add(p + "mlp.c_fc.bias", axis(mlp))
            b.add(p + "mlp.c_proj.weight", axis(mlp), axis(res)); b.add(p + "mlp.c_proj.bias", axis(res))
        }
        b.add(pre + "ln_f.weight", axis(res)); b.add(pre + "ln_f.bias", axis(res))
        b.add("lm_head.weight", nil, axis(res))
        return PermutationSpec(architecture: "gpt2", spaces: b.spaces, tensors: b.tensors, fixed: ["*.attn.bias", "*.attn.masked_bias"])
    }

    /// BERT / RoBERTa (post-LN, still one residual space); the MLM transform maps the residual
    /// to itself, so it carries the residual space on both axes.
    static func bert(_ c: Checkpoint, _ config: JSONValue) throws -> PermutationSpec {
        let d = try int(config, "hidden_size", c)
        let heads = try int(config, "num_attention_heads", c)
        let layers = try int(config, "num_hidden_layers", c)
        let hd = d / heads
        let pre = prefix(c, probe: "embeddings.word_embeddings.weight", candidates: ["", "bert.", "roberta."])
        var b = Builder(checkpoint: c)
        let res = b.space("res", d)
        for e in ["word_embeddings", "position_embeddings", "token_type_embeddings"] { b.add(pre + "embeddings.\(e).weight", nil, axis(res)) }
        func norm(_ p: String) { for s in ["weight", "bias", "gamma", "beta"] { b.add(p + "." + s, axis(res)) } }
        norm(pre + "embeddings.LayerNorm")
        for l in 0..<layers {
            let p = pre + "encoder.layer.\(l)."
            let head = b.space("layer.\(l).head", heads)
            let qk = Level.fixed(hd, why: unmatchedQK)
            let vdim = b.space("layer.\(l).vdim.{0}", hd)
            let f = try b.dim(p + "intermediate.dense.weight", 0) ?? int(config, "intermediate_size", c)
            let mlp = b.space("layer.\(l).mlp", f)
            for n in ["query", "key"] {
                b.add(p + "attention.self.\(n).weight", axis(head, qk), axis(res)); b.add(p + "attention.self.\(n).bias", axis(head, qk))
            }
            b.add(p + "attention.self.value.weight", axis(head, vdim), axis(res)); b.add(p + "attention.self.value.bias", axis(head, vdim))
            b.add(p + "attention.output.dense.weight", axis(res), axis(head, vdim)); b.add(p + "attention.output.dense.bias", axis(res))
            norm(p + "attention.output.LayerNorm")
            b.add(p + "intermediate.dense.weight", axis(mlp), axis(res)); b.add(p + "intermediate.dense.bias", axis(mlp))
            b.add(p + "output.dense.weight", axis(res), axis(mlp)); b.add(p + "output.dense.bias", axis(res))
            norm(p + "output.LayerNorm")
        }
        let pooled = b.has(pre + "pooler.dense.weight")
        if pooled {
            let pool = b.space("pooler", b.dim(pre + "pooler.dense.weight", 0)!)
            b.add(pre + "pooler.dense.weight", axis(pool), axis(res)); b.add(pre + "pooler.dense.bias", axis(pool))
            b.add("classifier.weight", nil, axis(pool))
            b.add("cls.seq_relationship.weight", nil, axis(pool))
        } else {
            b.add("classifier.weight", nil, axis(res))
        }
        if let hidden = b.dim("classifier.dense.weight", 0) {  // RoBERTa's head reads the first token
            let cls = b.space("classifier", hidden)
            b.add("classifier.dense.weight", axis(cls), axis(res)); b.add("classifier.dense.bias", axis(cls))
            b.add("classifier.out_proj.weight", nil, axis(cls))
        }
        for h in ["cls.predictions", "lm_head"] {
            b.add(h + ".transform.dense.weight", axis(res), axis(res)); b.add(h + ".transform.dense.bias", axis(res))
            b.add(h + ".dense.weight", axis(res), axis(res)); b.add(h + ".dense.bias", axis(res))
            norm(h + ".transform.LayerNorm"); norm(h + ".layer_norm")
            b.add(h + ".decoder.weight", nil, axis(res))
        }
        return PermutationSpec(architecture: "bert", spaces: b.spaces, tensors: b.tensors,
                               fixed: ["*embeddings.position_ids", "*embeddings.token_type_ids", "classifier.bias", "classifier.out_proj.bias",
                                       "cls.seq_relationship.bias", "cls.predictions.bias", "cls.predictions.decoder.bias", "lm_head.bias", "lm_head.decoder.bias"])
    }
}
