import SafeTensors
import Linalg

/// `lowrank-svd apply`: merges a PEFT LoRA adapter into its base the way PEFT's merge_and_unload
/// does (ΔW = scale · B A, scale = alpha / r or alpha / sqrt(r) with rsLoRA, per module after
/// rank_pattern and alpha_pattern; transposed for fan_in_fan_out and embeddings; lora_B.bias when
/// lora_bias; modules_to_save replace their weights), streaming, without torch.
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
        let b = try Checkpoint(path: base)
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: [b, weights])
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
        for (m, mod) in modules {
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
                if let (m, mod) = d[e.name] {
                    let w = decodeFloats(b, e)
                    let ae = weights.entry(mod.a!)!, bE = weights.entry(mod.b!)!
                    let am = Matrix(rows: ae.info.shapeInts[0], cols: ae.info.shapeInts[1], data: decodeFloats(weights, ae))
                    let bm = Matrix(rows: bE.info.shapeInts[0], cols: bE.info.shapeInts[1], data: decodeFloats(weights, bE))
                    var delta = matmul(bm, am)                                  // B A, in f32 like PEFT
                    if mod.embedding || config.fanInFanOut { delta = delta.transposed }
                    let sc = config.scale(for: m) * s
                    let merged = (0..<w.count).map { Float(Double(w[$0]) + sc * Double(delta.data[$0])) }
                    try writer.write(floats: merged, as: e.info.dtype, tensor: i)
                    return .object([("name", .string(e.name)), ("rank", .int(am.rows)), ("scale", .double(sc)),
                                    ("kind", .string(mod.embedding ? "embedding" : (config.fanInFanOut ? "linear, fan_in_fan_out" : "linear")))])
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
