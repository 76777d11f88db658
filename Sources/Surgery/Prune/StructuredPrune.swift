import SafeTensors

/// `prune-sparse --method structured`: removes whole MLP channels (rows of gate/up, columns of
/// down) or whole attention KV groups (their K/V heads, the query heads that share them, and the
/// matching o_proj columns) from every layer of a LLaMA-family folder, and rewrites config.json.
/// Tensors are gathered in their own dtype (no arithmetic), so the smaller model computes exactly
/// what the original computes with those channels zeroed.
public struct StructuredPruneJob: Sendable {
    public var settings = JobSettings()
    public enum Target: String, Sendable, CaseIterable { case mlp, heads, hidden, layers }
    /// How units are chosen: auto (activation statistics when --stats is given, else weight
    /// norms), stats, norm, or uniform (evenly spaced, the same in every layer).
    public enum Selection: String, Sendable, CaseIterable { case auto, stats, norm, uniform }
    public var select: Selection = .auto
    /// --target layers: the layers to remove (nil: the lowest-scoring).
    public var layerList: [Int]?

    public var input: String
    public var output: String
    public var target: Target = .mlp
    public var sparsity = 0.25
    public var statsPath: String?

    public init(input: String, output: String) { self.input = input; self.output = output }

    /// Rows or columns of one tensor to keep (sorted), along an axis (0 rows, 1 columns).
    struct Gather: Sendable { let keep: [Int]; let axis: Int }

    /// Copies the kept rows (or columns) of a tensor in its own dtype, no arithmetic, and writes them.
    static func writeGathered(_ src: UnsafeRawBufferPointer, _ info: TensorInfo, _ gather: Gather, count outCount: Int,
                              writer: CheckpointWriter, index: Int) throws {
        let size = info.dtype.size!
        let shape = info.shapeInts
        let cols = shape.count == 2 ? shape[1] : 1
        let buf = UnsafeMutableRawPointer.allocate(byteCount: max(1, outCount * size), alignment: 64)
        defer { buf.deallocate() }
        var o = 0
        if gather.axis == 0 {   // rows (or entries of a 1-D tensor)
            for r in gather.keep {
                (buf + o).copyMemory(from: src.baseAddress! + r * cols * size, byteCount: cols * size)
                o += cols * size
            }
        } else {                // columns
            for r in 0..<shape[0] { for c in gather.keep {
                (buf + o).copyMemory(from: src.baseAddress! + (r * cols + c) * size, byteCount: size)
                o += size
            } }
        }
        try writer.write(tensor: index, UnsafeRawBufferPointer(start: buf, count: outCount * size))
    }

    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        guard sparsity >= 0 && sparsity < 1 else { throw UsageError("--sparsity must be in [0, 1) for structured pruning") }
        let ckpt = try Checkpoint(path: input)
        guard let folder = ckpt.folder, FileSystem.kind(FileSystem.join(folder, "config.json")) == .file else {
            throw FormatError(file: input, "structured pruning needs a model folder with config.json (it rewrites the sizes)")
        }
        let config = try ModelConfig(path: FileSystem.join(folder, "config.json"))
        let configPath = config.path
        let purpose = "for structured pruning (it rewrites the sizes)"
        let hidden = try config.requiredInt("hidden_size", for: purpose), heads = try config.requiredInt("num_attention_heads", for: purpose)
        let inter = try config.requiredInt("intermediate_size", for: purpose)
        guard heads > 0 else { throw FormatError(file: configPath, "num_attention_heads must be positive") }
        let kvHeads = try config.int("num_key_value_heads") ?? heads
        let headDim = try config.int("head_dim") ?? hidden / heads
        guard kvHeads > 0, heads % kvHeads == 0 else { throw FormatError(file: configPath, "num_attention_heads is not a multiple of num_key_value_heads") }
        if select == .stats && statsPath == nil { throw UsageError("--select stats needs --stats FILE") }
        if (select == .norm || select == .uniform) && statsPath != nil { throw UsageError("--select \(select.rawValue) does not read --stats: drop one") }
        if layerList != nil && target != .layers { throw UsageError("--layers belongs to --target layers") }
        let stats = try statsPath.map { try PruneStatistics(path: $0) }
        var inputs = [ckpt]
        if let c = stats?.checkpoint { inputs.append(c) }
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: inputs, part: settings.part)
        guard case .folder = out.finalLayout else { throw UsageError("structured pruning writes a folder (it rewrites config.json): give a folder as -o") }

        // Layer prefixes ("model.layers.7.") in layer order (files list them 0, 1, 10, 11, ..., 2).
        let numbered = uniqued(ckpt.entries.compactMap { e -> String? in
            guard let l = LayerName(e.name) else { return nil }
            let prefix = LayerName.name(l.template, l.index)
            return String(prefix[..<prefix.range(of: ".\(l.index).")!.upperBound])
        }).map { p in (p, Int(p.dropLast().split(separator: ".").last!)!) }
        let layers = numbered.sorted { $0.1 < $1.1 }.map(\.0)
        if target == .layers, numbered.map(\.1).sorted() != Array(0..<numbered.count) {
            throw FormatError(file: input, "layer numbers are not 0..\(numbered.count - 1): cannot renumber the layers")
        }
        guard !layers.isEmpty else { throw FormatError(file: input, "no layers found (names like model.layers.0.mlp.up_proj.weight)") }
        let shape = Shape(hidden: hidden, heads: heads, kvHeads: kvHeads, headDim: headDim, inter: inter)
        if target == .layers { return try runLayers(ckpt, config, layers: layers, shape: shape, stats: stats, out: out, inputs: inputs) }
        if target == .hidden { return try runHidden(ckpt, config, layers: layers, shape: shape, stats: stats, out: out, inputs: inputs) }
        func need(_ name: String, _ shape: [UInt64]) throws -> Checkpoint.Entry {
            guard let e = ckpt.entry(name) else { throw FormatError(file: input, tensor: name, "missing: structured pruning of \(target.rawValue) needs it") }
            guard e.info.shape == shape else { throw FormatError(file: ckpt.filePath(of: e), tensor: name, "shape \(e.info.shape), expected \(shape) from config.json") }
            return e
        }
        func norms(_ e: Checkpoint.Entry, axis: Int, weights: [Double]? = nil) -> [Double] {
            let v = decodeDoubles(ckpt, e)
            let cols = e.info.shapeInts[1], rows = e.info.shapeInts[0]
            var out = [Double](repeating: 0, count: axis == 0 ? rows : cols)
            for r in 0..<rows { for c in 0..<cols {
                let x = v[r * cols + c] * v[r * cols + c] * (weights.map { $0[axis == 0 ? c : r] } ?? 1)
                out[axis == 0 ? r : c] += x
            } }
            return out.map { $0.squareRoot() }
        }
        let units = target == .mlp ? inter : kvHeads
        let remove = Int(Double(units) * sparsity)
        var gathers: [String: Gather] = [:]
        var rows: [JSONValue] = []
        for prefix in layers {
            var scores = [Float](repeating: 0, count: units)
            var member: [(String, Int, Int)] = []   // tensor, axis, unit size along it
            switch target {
            case .mlp:
                let g = try need(prefix + "mlp.gate_proj.weight", [UInt64(inter), UInt64(hidden)])
                let u = try need(prefix + "mlp.up_proj.weight", [UInt64(inter), UInt64(hidden)])
                let d = try need(prefix + "mlp.down_proj.weight", [UInt64(hidden), UInt64(inter)])
                if let a = try stats?.channelSquares(forWeight: d.name, inputs: inter) {
                    // The channel's output: ||down[:, c]|| * ||X_c|| (Wanda's score, per channel).
                    let dn = norms(d, axis: 1)
                    for c in 0..<inter { scores[c] = Float(dn[c] * a[c].squareRoot()) }
                } else {
                    let gn = norms(g, axis: 0), un = norms(u, axis: 0), dn = norms(d, axis: 1)
                    for c in 0..<inter { scores[c] = Float(gn[c] * un[c] * dn[c]) }
                }
                member = [(g.name, 0, 1), (u.name, 0, 1), (d.name, 1, 1)]
            case .heads:
                let perGroup = heads / kvHeads
                let q = try need(prefix + "self_attn.q_proj.weight", [UInt64(heads * headDim), UInt64(hidden)])
                let k = try need(prefix + "self_attn.k_proj.weight", [UInt64(kvHeads * headDim), UInt64(hidden)])
                let v = try need(prefix + "self_attn.v_proj.weight", [UInt64(kvHeads * headDim), UInt64(hidden)])
                let o = try need(prefix + "self_attn.o_proj.weight", [UInt64(hidden), UInt64(heads * headDim)])
                // A group's output: its value rows through its o_proj columns (weighted by the
                // o_proj input statistics when given).
                let a = try stats?.channelSquares(forWeight: o.name, inputs: heads * headDim)
                let on = norms(o, axis: 1, weights: nil), vn = norms(v, axis: 0)
                for gi in 0..<kvHeads {
                    var oSq = 0.0, vSq = 0.0
                    for j in (gi * perGroup * headDim)..<((gi + 1) * perGroup * headDim) { oSq += on[j] * on[j] * (a?[j] ?? 1) }
                    for j in (gi * headDim)..<((gi + 1) * headDim) { vSq += vn[j] * vn[j] }
                    scores[gi] = Float((oSq * vSq).squareRoot())
                }
                member = [(q.name, 0, perGroup * headDim), (k.name, 0, headDim), (v.name, 0, headDim), (o.name, 1, perGroup * headDim)]
                for (bias, size) in [("q_proj.bias", perGroup * headDim), ("k_proj.bias", headDim), ("v_proj.bias", headDim)] {
                    if ckpt.entry(prefix + "self_attn." + bias) != nil { member.append((prefix + "self_attn." + bias, 0, size)) }
                }
            case .hidden, .layers:
                break   // handled by runHidden / runLayers above
            }
            let pruned = select == .uniform ? StructuredPruneJob.uniformRemoval(units, keep: units - remove)
                : scores.withUnsafeBufferPointer { PruneMask.smallest($0, remove) }
            let keptUnits = (0..<units).filter { !pruned[$0] }
            for (name, axis, size) in member {
                gathers[name] = Gather(keep: keptUnits.flatMap { u in (u * size)..<((u + 1) * size) }, axis: axis)
            }
            rows.append(.object([("layer", .string(String(prefix.dropLast()))), ("removed", .array((0..<units).filter { pruned[$0] }.map { .int($0) })),
                                 ("scores_removed_max", .double(Double((0..<units).filter { pruned[$0] }.map { scores[$0] }.max() ?? 0))),
                                 ("scores_kept_min", .double(Double(keptUnits.map { scores[$0] }.min() ?? 0)))]))
        }
        // Output shapes, config and the gathers.
        let outputs: [OutputTensor] = ckpt.entries.map { e in
            var shape = e.info.shape
            if let g = gathers[e.name] { shape[g.axis] = UInt64(g.keep.count) }
            return OutputTensor(name: e.name, dtype: e.info.dtype, shape: shape)
        }
        let newSizes: [(String, Int)]
        switch target {
        case .mlp: newSizes = [("intermediate_size", inter - remove)]
        case .heads:
            newSizes = [("num_attention_heads", heads - remove * (heads / kvHeads)), ("num_key_value_heads", kvHeads - remove),
                        ("head_dim", headDim)]  // no longer hidden_size / num_attention_heads
        case .hidden, .layers: newSizes = []
        }
        timer.lap("plan")
        let writer = try out.writer(tensors: outputs)
        let g = gathers
        do {
            _ = try Engine.map(count: ckpt.entries.count, threads: settings.threads, progress: Progress(total: outputs.count, label: "prune", quiet: settings.quiet)) { i in
                guard writer.owns(i) else { return 0 }
                let e = ckpt.entries[i]
                let src = ckpt.bytes(e)
                defer { ckpt.release(e) }
                guard let gather = g[e.name] else { try writer.write(tensor: i, src); return 0 }
                try StructuredPruneJob.writeGathered(src, e.info, gather, count: outputs[i].count, writer: writer, index: i)
                return 0
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        let sizes = newSizes
        let copied = try out.copyAuxiliaryFiles(from: ckpt, edit: { c in for (k, v) in sizes { c.set(k, .int(v)) } })
        timer.lap("prune")
        report.inputs = inputs.map(RunReport.describe)
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        report.parameters = [("method", .string("structured")), ("target", .string(target.rawValue)), ("sparsity", .double(sparsity)),
                             ("stats", statsPath.map { .string($0) } ?? .null), ("select", .string(select.rawValue))]
        report.tensors = rows
        let before = ckpt.totalBytes, after = outputs.reduce(0) { $0 + UInt64($1.byteCount) }
        report.summary = [("layers", .int(layers.count)), ("units", .int(units)), ("removed_per_layer", .int(remove)),
                          ("bytes_in", .uint(before)), ("bytes_out", .uint(after))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }
}
