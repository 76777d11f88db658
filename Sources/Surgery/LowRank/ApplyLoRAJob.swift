import SafeTensors
import Linalg

/// `lowrank-svd apply`: merges a PEFT adapter into its base the way PEFT's merge_and_unload does:
/// LoRA (ΔW = scale · B A, scale = alpha / r or alpha / sqrt(r) with rsLoRA, per module after
/// rank_pattern and alpha_pattern; transposed for fan_in_fan_out and embeddings; lora_B.bias when
/// lora_bias; modules_to_save replace their weights), DoRA, MiSS/Bone and FourierFT
/// (`AdapterVariants`), streaming, without torch.
public struct ApplyLoRAJob: Sendable {
    public var base: String
    public var adapter: String
    public var output: String
    public var scale = 1.0
    public var settings = JobSettings()

    public init(base: String, adapter: String, output: String) { self.base = base; self.adapter = adapter; self.output = output }

    struct Module: Sendable {
        var a: String?, b: String?, bias: String?
        var embedding = false
        /// DoRA's lora_magnitude_vector; the base weight PEFT saved for a targeted embedding.
        var magnitude: String?, baseCopy: String?
        /// MiSS/Bone's miss_block / bone_block; FourierFT's fourierft_spectrum.
        var block: String?, spectrum: String?
    }

    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let configPath = FileSystem.join(adapter, PEFTAdapterConfig.configName)
        guard FileSystem.kind(configPath) == .file else { throw FormatError(file: adapter, "no \(PEFTAdapterConfig.configName): not a PEFT adapter folder") }
        let config = try PEFTAdapterConfig(path: configPath)
        // PEFT's order: adapter_model.safetensors, else the pickled adapter_model.bin.
        let pickled = FileSystem.join(adapter, PEFTAdapterConfig.pickledWeightsName)
        let weightsPath = FileSystem.kind(FileSystem.join(adapter, PEFTAdapterConfig.weightsName)) != .file && FileSystem.kind(pickled) == .file
            ? pickled : FileSystem.join(adapter, PEFTAdapterConfig.weightsName)
        let weights = try Checkpoint(path: weightsPath)
        if config.kind != .lora && scale != 1 {
            throw UsageError("--scale multiplies a LoRA delta; merge_and_unload has no scale for \(config.kind.rawValue) adapters")
        }
        let b = try Checkpoint(path: base)
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: [b, weights], part: settings.part)
        // Sort the adapter's tensors by module.
        var modules: [String: Module] = [:]
        var replaced: [String: String] = [:]   // base tensor -> adapter tensor (modules_to_save)
        var warnings: [String] = []
        let p = PEFTAdapterConfig.prefix
        for e in weights.entries {
            guard e.name.hasPrefix(p) else { throw FormatError(file: weights.path, tensor: e.name, "does not start with '\(p)'") }
            var rest = String(e.name.dropFirst(p.count))
            func take(_ suffix: String) -> String? { rest.hasSuffix(suffix) ? String(rest.dropLast(suffix.count)) : nil }
            if let m = take(".lora_A.weight") { modules[m, default: Module()].a = e.name; continue }
            if let m = take(".lora_B.weight") { modules[m, default: Module()].b = e.name; continue }
            if let m = take(".lora_embedding_A") { modules[m, default: Module()].a = e.name; modules[m]!.embedding = true; continue }
            if let m = take(".lora_embedding_B") { modules[m, default: Module()].b = e.name; modules[m]!.embedding = true; continue }
            if let m = take(".lora_magnitude_vector") ?? take(".lora_magnitude_vector.weight") {
                guard config.kind == .dora else { throw FormatError(file: weights.path, tensor: e.name, "is a DoRA magnitude, but the config does not set use_dora") }
                modules[m, default: Module()].magnitude = e.name; continue
            }
            if let m = take(".miss_block") ?? take(".bone_block") {
                guard config.kind == .miss else { throw FormatError(file: weights.path, tensor: e.name, "is a MiSS/Bone block, but peft_type is not MISS or BONE") }
                modules[m, default: Module()].block = e.name; continue
            }
            if let m = take(".fourierft_spectrum") {
                guard config.kind == .fourierft else { throw FormatError(file: weights.path, tensor: e.name, "is a FourierFT spectrum, but peft_type is not FOURIERFT") }
                modules[m, default: Module()].spectrum = e.name; continue
            }
            if let m = take(".base_layer.weight") { modules[m, default: Module()].baseCopy = e.name; continue }
            if let m = take(".lora_B.bias") {
                if config.loraBias { modules[m, default: Module()].bias = e.name } else {
                    warnings.append("\(e.name): lora_bias is false in the config, so PEFT ignores this bias; so does wtool")
                }
                continue
            }
            if rest.contains(".lora_") { throw FormatError(file: weights.path, tensor: e.name, "is a LoRA variant wtool does not merge (only lora_A/lora_B, embeddings and lora_B.bias)") }
            rest = rest.replacingOccurrences(of: ".modules_to_save", with: "")
            guard let be = b.entry(rest) else { throw FormatError(file: weights.path, tensor: e.name, "saves '\(rest)', which the base does not have") }
            guard be.info.shape == e.info.shape else { throw FormatError(file: weights.path, tensor: e.name, "shape \(e.info.shape) differs from the base's \(be.info.shape)") }
            replaced[rest] = e.name
        }
        var deltas: [String: (module: String, Module)] = [:]  // base weight -> module
        for (m, mod) in modules where config.kind == .miss || config.kind == .fourierft {
            guard let be = b.entry(m + ".weight") else { throw FormatError(file: weights.path, tensor: p + m, "adapts '\(m).weight', which the base does not have") }
            guard be.info.shape.count == 2 else { throw FormatError(file: weights.path, tensor: p + m, "adapts a \(be.info.shape.count)-D weight: Linear layers only") }
            let shape = be.info.shapeInts
            if config.kind == .miss {
                guard let bn = mod.block, let blk = weights.entry(bn) else { throw FormatError(file: weights.path, tensor: p + m, "has no miss_block") }
                if config.fanInFanOut { throw FormatError(file: weights.path, tensor: bn, "MiSS on a fan_in_fan_out (Conv1D) layer: PEFT supports Linear layers only") }
                let (out, inp, bs) = (shape[0], shape[1], blk.info.shapeInts)
                switch config.missVariant {
                case .bat:
                    guard bs.count == 3, bs[1] == bs[2], bs[1] == config.r, bs[0] * bs[1] == out, inp % bs[1] == 0 else {
                        throw FormatError(file: weights.path, tensor: bn, "bat block of shape \(bs) for a \(out)x\(inp) weight with r \(config.r): the weight must divide into [r, r] tiles and the block be [out/r, r, r]")
                    }
                case .standard, .mini:
                    let width = config.missVariant == .mini ? config.miniR : out
                    guard bs.count == 2, bs[0] == config.r, bs[1] == width, config.r <= inp, out % width == 0 else {
                        throw FormatError(file: weights.path, tensor: bn, "block of shape \(bs) for a \(out)x\(inp) weight: MiSS needs [r, \(config.missVariant == .mini ? "mini_r" : "out")] = [\(config.r), \(width)] with r <= in")
                    }
                }
            } else {
                guard let sn = mod.spectrum, let sp = weights.entry(sn) else { throw FormatError(file: weights.path, tensor: p + m, "has no fourierft_spectrum") }
                guard sp.info.shape.count == 1, sp.info.shapeInts[0] == config.frequencies(for: m) else {
                    throw FormatError(file: weights.path, tensor: sn, "holds \(sp.info.shape) frequencies; the config (n_frequency / n_frequency_pattern) says \(config.frequencies(for: m))")
                }
                guard config.frequencies(for: m) <= shape[0] * shape[1] else { throw FormatError(file: weights.path, tensor: sn, "more frequencies than the weight has entries") }
            }
            if !config.targets(m) { warnings.append("\(m) is not in target_modules: PEFT would not create this adapter; merged anyway") }
            deltas[m + ".weight"] = (m, mod)
        }
        for (m, mod) in modules where config.kind == .lora || config.kind == .dora {
            guard let an = mod.a, let bn = mod.b, let ae = weights.entry(an), let bE = weights.entry(bn) else {
                throw FormatError(file: weights.path, tensor: p + m, "has lora_A without lora_B (or the reverse)")
            }
            guard ae.info.shape.count == 2, bE.info.shape.count == 2 else {
                throw FormatError(file: weights.path, tensor: an, "is \(ae.info.shape.count)-D: convolution LoRA is not supported")
            }
            let r = ae.info.shapeInts[0]
            guard bE.info.shapeInts[1] == r else { throw FormatError(file: weights.path, tensor: bn, "has \(bE.info.shapeInts[1]) columns, lora_A has \(r) rows") }
            guard config.rank(for: m) == r else {
                throw FormatError(file: weights.path, tensor: an, "has rank \(r) but the config (r / rank_pattern) says \(config.rank(for: m))")
            }
            guard let be = b.entry(m + ".weight") else { throw FormatError(file: weights.path, tensor: an, "adapts '\(m).weight', which the base does not have") }
            var shape = [bE.info.shapeInts[0], ae.info.shapeInts[1]]   // B A
            if mod.embedding || config.fanInFanOut { shape.reverse() }
            guard be.info.shapeInts == shape else {
                throw FormatError(file: weights.path, tensor: an, "gives a delta of shape \(shape) for '\(m).weight' of shape \(be.info.shape)")
            }
            if !config.targets(m) && !mod.embedding { warnings.append("\(m) is not in target_modules: PEFT would not create this LoRA; merged anyway") }
            if config.kind == .dora {
                let features = (mod.embedding || config.fanInFanOut) ? shape[1] : shape[0]
                guard let mn = mod.magnitude, let me = weights.entry(mn), me.info.count == features else {
                    throw FormatError(file: weights.path, tensor: p + m, "DoRA needs lora_magnitude_vector with one value per output feature (\(features))")
                }
            }
            if let copy = mod.baseCopy {
                guard weights.entry(copy)?.info.shape == be.info.shape else { throw FormatError(file: weights.path, tensor: copy, "differs in shape from the base's \(be.info.shape)") }
            }
            deltas[m + ".weight"] = (m, mod)
        }
        let outputs = b.entries.map { OutputTensor(name: $0.name, dtype: $0.info.dtype, shape: $0.info.shape) }
        timer.lap("plan")
        let writer = try out.writer(tensors: outputs)
        let (d, rep, s, selection) = (deltas, replaced, scale, settings.selection)
        warnings += selection.unusedPatterns(in: b.tensorNames).map { "pattern '\($0)' matches no tensor" }
        let biasOf = Dictionary(uniqueKeysWithValues: modules.compactMap { m, mod in mod.bias.map { (m + ".bias", ($0, m)) } })
        let rows: [JSONValue]
        do {
            rows = try Engine.map(count: b.entries.count, threads: settings.threads,
                                  progress: Progress(total: b.entries.count, label: "apply", quiet: settings.quiet)) { i -> JSONValue in
                let e = b.entries[i]
                guard writer.owns(i) else { return .object([("name", .string(e.name)), ("part", .string("another"))]) }
                guard selection.selects(e.name) else {
                    try writer.write(tensor: i, b.bytes(e))
                    b.release(e)
                    return .object([("name", .string(e.name)), ("copied", .bool(true)), ("excluded", .bool(true))])
                }
                if let src = rep[e.name] {
                    let v = decodeFloats(weights, weights.entry(src)!)
                    try writer.write(floats: v, as: e.info.dtype, tensor: i)
                    return .object([("name", .string(e.name)), ("from", .string("modules_to_save"))])
                }
                if let (_, mod) = d[e.name], config.kind == .miss || config.kind == .fourierft {
                    let w = decodeFloats(b, e)
                    let shape = e.info.shapeInts
                    let merged: [Float]
                    var row: [(String, JSONValue)] = [("name", .string(e.name)), ("kind", .string(config.kind.rawValue))]
                    if config.kind == .miss {
                        let blk = weights.entry(mod.block!)!
                        merged = AdapterVariants.miss(base: w, rows: shape[0], cols: shape[1], block: decodeFloats(weights, blk),
                                                      blockShape: blk.info.shapeInts, variant: config.missVariant)
                        row.append(("variant", .string(config.missVariant.rawValue)))
                    } else {
                        let sp = weights.entry(mod.spectrum!)!
                        let (out, inp) = config.fanInFanOut ? (shape[1], shape[0]) : (shape[0], shape[1])
                        var delta = AdapterVariants.fourierDelta(spectrum: decodeFloats(weights, sp), out: out, inp: inp,
                                                                 seed: config.randomLocSeed!, scaling: config.fourierScaling)
                        roundInPlace(&delta, to: sp.info.dtype)   // PEFT casts ΔW to the spectrum's dtype before adding
                        if config.fanInFanOut { delta = Matrix(rows: out, cols: inp, data: delta).transposed.data }
                        merged = (0..<w.count).map { Float(Double(w[$0]) + Double(delta[$0])) }
                        row += [("frequencies", .int(sp.info.count)), ("scaling", .double(config.fourierScaling))]
                    }
                    try writer.write(floats: merged, as: e.info.dtype, tensor: i)
                    return .object(row)
                }
                if let (m, mod) = d[e.name] {
                    let w = mod.baseCopy.map { decodeFloats(weights, weights.entry($0)!) } ?? decodeFloats(b, e)
                    let ae = weights.entry(mod.a!)!, bE = weights.entry(mod.b!)!
                    let am = Matrix(rows: ae.info.shapeInts[0], cols: ae.info.shapeInts[1], data: decodeFloats(weights, ae))
                    let bm = Matrix(rows: bE.info.shapeInts[0], cols: bE.info.shapeInts[1], data: decodeFloats(weights, bE))
                    var delta = matmul(bm, am)                                  // B A, in f32 like PEFT
                    if mod.embedding || config.fanInFanOut { delta = delta.transposed }
                    let sc = config.scale(for: m) * s
                    let layout = mod.embedding ? "embedding" : (config.fanInFanOut ? "linear, fan_in_fan_out" : "linear")
                    if config.kind == .dora {
                        let scaled = delta.data.map { Float(sc * Double($0)) }
                        let shape = e.info.shapeInts
                        let merged = AdapterVariants.dora(base: w, delta: scaled, rows: shape[0], cols: shape[1],
                                                          magnitude: decodeFloats(weights, weights.entry(mod.magnitude!)!),
                                                          perColumn: mod.embedding || config.fanInFanOut)
                        try writer.write(floats: merged, as: e.info.dtype, tensor: i)
                        return .object([("name", .string(e.name)), ("rank", .int(am.rows)), ("scale", .double(sc)),
                                        ("kind", .string("dora, " + layout)), ("base_from_adapter", .bool(mod.baseCopy != nil))])
                    }
                    let merged = (0..<w.count).map { Float(Double(w[$0]) + sc * Double(delta.data[$0])) }
                    try writer.write(floats: merged, as: e.info.dtype, tensor: i)
                    return .object([("name", .string(e.name)), ("rank", .int(am.rows)), ("scale", .double(sc)),
                                    ("kind", .string(layout)), ("base_from_adapter", .bool(mod.baseCopy != nil))])
                }
                if let (bn, m) = biasOf[e.name] {
                    let v = decodeFloats(b, e), db = decodeFloats(weights, weights.entry(bn)!)
                    let sc = config.scale(for: m) * s
                    try writer.write(floats: (0..<v.count).map { Float(Double(v[$0]) + sc * Double(db[$0])) }, as: e.info.dtype, tensor: i)
                    return .object([("name", .string(e.name)), ("from", .string("lora_B.bias")), ("scale", .double(sc))])
                }
                try writer.write(tensor: i, b.bytes(e))
                b.release(e)
                return .object([("name", .string(e.name)), ("copied", .bool(true))])
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        for name in biasOf.keys where b.entry(name) == nil {
            warnings.append("\(name): the adapter has a lora_B.bias but the base has no bias there; ignored")
        }
        let copied = try out.copyAuxiliaryFiles(from: b)
        timer.lap("apply")
        report.warnings = warnings
        report.inputs = [RunReport.describe(b), RunReport.describe(weights)]
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        report.parameters = [("scale", .double(scale)), ("r", .int(config.r)), ("lora_alpha", .double(config.loraAlpha)),
                             ("use_rslora", .bool(config.useRSLoRA)), ("fan_in_fan_out", .bool(config.fanInFanOut)),
                             ("include", .array(selection.include.map { .string($0) })), ("exclude", .array(selection.exclude.map { .string($0) }))]
        report.tensors = rows
        report.summary = [("lora_modules", .int(deltas.count)), ("modules_to_save", .int(replaced.count)), ("tensors", .int(rows.count))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }
}
