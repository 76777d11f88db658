import SafeTensors

/// Width and depth shrinking (`--target hidden|layers`): the weight-selection initialisation of
/// "Initializing Models with Larger Ones" (Xu et al., ICLR 2024) and Minitron's structured pruning
/// (Muralidharan et al., 2024), without retraining. Tensors are gathered in their own dtype.
extension StructuredPruneJob {
    struct Shape: Sendable { let hidden, heads, kvHeads, headDim, inter: Int }

    /// Units to remove so that `keep` evenly spaced ones stay: floor(i · n / keep), i < keep.
    static func uniformRemoval(_ n: Int, keep: Int) -> [Bool] {
        var removed = [Bool](repeating: true, count: n)
        for i in 0..<keep { removed[i * n / keep] = false }
        return removed
    }

    /// The kept indices (sorted) of n units: uniform, or the highest scores (ties: lower index kept).
    func choose(_ n: Int, remove: Int, scores: [Float]?) -> [Int] {
        let removed = select == .uniform || scores == nil ? StructuredPruneJob.uniformRemoval(n, keep: n - remove)
            : scores!.withUnsafeBufferPointer { PruneMask.smallest($0, remove) }
        return (0..<n).filter { !removed[$0] }
    }

    // MARK: depth

    /// Removes whole blocks and renumbers the rest: `--layers`, or the lowest-scoring
    /// int(L · sparsity) by the size of what each block writes into the residual stream.
    func runLayers(_ ckpt: Checkpoint, _ config: ModelConfig, layers: [String], shape: Shape, stats: PruneStatistics?, out: OutputPlan,
                   inputs: [Checkpoint]) throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let L = layers.count
        let removed: [Int]
        var scores: [Double]? = nil
        if let layerList {
            if let bad = layerList.first(where: { $0 < 0 || $0 >= L }) { throw UsageError("--layers names layer \(bad); the model has layers 0-\(L - 1)") }
            removed = Array(Set(layerList)).sorted()
            guard removed.count < L else { throw UsageError("--layers removes all \(L) layers") }
            return try writeLayers(ckpt, config, layers: layers, removed: removed, scores: nil, out: out, inputs: inputs, timer: &timer, report: &report)
        }
        let remove = Int(Double(L) * sparsity)
        guard remove > 0 else { throw UsageError("--sparsity \(sparsity) removes no layer of \(L): give a larger fraction or --layers") }
        if select != .uniform {
            // What a block adds to the residual stream comes out of o_proj and down_proj:
            // sqrt(Σ_c ||W[:, c]||² · Σx_c²) with the input statistics, else ||W||_F.
            scores = try layers.map { prefix in
                var total = 0.0
                for (name, inner) in [(prefix + "self_attn.o_proj.weight", shape.heads * shape.headDim), (prefix + "mlp.down_proj.weight", shape.inter)] {
                    guard let e = ckpt.entry(name), e.info.shapeInts == [shape.hidden, inner] else {
                        throw FormatError(file: input, tensor: name, "missing or not [\(shape.hidden), \(inner)]: it scores its layer")
                    }
                    let v = decodeDoubles(ckpt, e)
                    var col = [Double](repeating: 0, count: inner)
                    for r in 0..<shape.hidden { for c in 0..<inner { col[c] += v[r * inner + c] * v[r * inner + c] } }
                    var a: [Double]? = nil
                    if let stats {
                        guard let s = try stats.channelSquares(forWeight: name, inputs: inner, normalized: false) else {
                            throw FormatError(file: stats.path, tensor: name, "no act_sq_sum for this module: it scores its layer")
                        }
                        a = s
                    }
                    total += (0..<inner).reduce(0.0) { $0 + col[$1] * (a?[$1] ?? 1) }.squareRoot()
                }
                return total
            }
        }
        let kept = choose(L, remove: remove, scores: scores.map { $0.map { Float($0) } })
        removed = (0..<L).filter { !kept.contains($0) }
        return try writeLayers(ckpt, config, layers: layers, removed: removed, scores: scores, out: out, inputs: inputs, timer: &timer, report: &report)
    }

    private func writeLayers(_ ckpt: Checkpoint, _ config: ModelConfig, layers: [String], removed: [Int], scores: [Double]?, out: OutputPlan,
                             inputs: [Checkpoint], timer: inout PhaseTimer, report: inout RunReport) throws -> RunReport {
        let gone = Set(removed)
        var newIndex: [Int: Int] = [:]
        for l in 0..<layers.count where !gone.contains(l) { newIndex[l] = newIndex.count }
        var sources: [Checkpoint.Entry] = []
        var outputs: [OutputTensor] = []
        for e in ckpt.entries {
            if let l = layers.firstIndex(where: { e.name.hasPrefix($0) }) {
                guard let k = newIndex[l] else { continue }
                let name = layers[k] + e.name.dropFirst(layers[l].count)
                outputs.append(OutputTensor(name: name, dtype: e.info.dtype, shape: e.info.shape))
            } else {
                outputs.append(OutputTensor(name: e.name, dtype: e.info.dtype, shape: e.info.shape))
            }
            sources.append(e)
        }
        timer.lap("plan")
        let writer = try out.writer(tensors: outputs)
        let src = sources
        do {
            _ = try Engine.map(count: src.count, threads: settings.threads, progress: Progress(total: src.count, label: "prune", quiet: settings.quiet)) { i in
                guard writer.owns(i) else { return 0 }
                try writer.write(tensor: i, ckpt.bytes(src[i]))
                ckpt.release(src[i])
                return 0
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        let keptCount = layers.count - removed.count
        let copied = try out.copyAuxiliaryFiles(from: ckpt, edit: { c in
            c.set("num_hidden_layers", .int(keptCount))
            // Per-layer lists in the config follow the layers that stay.
            for key in ["layer_types", "sliding_window_pattern_list", "mlp_only_layers_list"] {
                if let list = c[key]?.arrayValue, list.count == layers.count {
                    c.set(key, .array(list.enumerated().filter { !gone.contains($0.offset) }.map(\.element)))
                }
            }
        })
        timer.lap("prune")
        report.inputs = inputs.map(RunReport.describe)
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        report.parameters = [("method", .string("structured")), ("target", .string("layers")), ("sparsity", .double(sparsity)),
                             ("layers", layerList.map { .array($0.map { .int($0) }) } ?? .null), ("select", .string(select.rawValue)),
                             ("stats", statsPath.map { .string($0) } ?? .null)]
        report.tensors = (0..<layers.count).map { l in
            var row: [(String, JSONValue)] = [("layer", .int(l)), ("removed", .bool(gone.contains(l)))]
            if let k = newIndex[l] { row.append(("new_index", .int(k))) }
            if let scores { row.append(("score", .double(scores[l]))) }
            return .object(row)
        }
        report.summary = [("layers", .int(layers.count)), ("removed", .array(removed.map { .int($0) })), ("layers_out", .int(keptCount)),
                          ("bytes_in", .uint(ckpt.totalBytes)), ("bytes_out", .uint(outputs.reduce(0) { $0 + UInt64($1.byteCount) }))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }

    // MARK: width

    /// Removes residual channels everywhere they appear: embedding and lm_head columns, every
    /// RMSNorm weight, the inputs of q/k/v/gate/up, the outputs (and biases) of o_proj/down_proj.
    /// head_dim is written explicitly so attention keeps its shape; any other tensor with a
    /// dimension of hidden_size is refused rather than guessed.
    func runHidden(_ ckpt: Checkpoint, _ config: ModelConfig, layers: [String], shape: Shape, stats: PruneStatistics?, out: OutputPlan,
                   inputs: [Checkpoint]) throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let H = shape.hidden
        let remove = Int(Double(H) * sparsity)
        guard remove > 0 else { throw UsageError("--sparsity \(sparsity) removes no channel of \(H)") }
        var axisOf: [String: Int] = [:]
        for e in ckpt.entries {
            let n = e.name, s = e.info.shapeInts
            let inLayer = layers.contains { n.hasPrefix($0) }
            let leaf = inLayer ? String(n.dropFirst(layers.first { n.hasPrefix($0) }!.count)) : n
            let columns = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight"]
            let rows = ["self_attn.o_proj.weight", "mlp.down_proj.weight", "self_attn.o_proj.bias", "mlp.down_proj.bias",
                        "input_layernorm.weight", "post_attention_layernorm.weight"]
            var axis: Int? = nil
            if inLayer && columns.contains(leaf) { axis = 1 }
            else if inLayer && rows.contains(leaf) { axis = 0 }
            else if !inLayer && (n.hasSuffix("embed_tokens.weight") || n == "lm_head.weight") { axis = 1 }
            else if !inLayer && n.hasSuffix("norm.weight") && s == [H] { axis = 0 }
            if let axis {
                guard s.count > axis, s[axis] == H else { throw FormatError(file: ckpt.filePath(of: e), tensor: n, "shape \(s): expected hidden_size \(H) on axis \(axis)") }
                axisOf[n] = axis
            } else if s.contains(H) && !(inLayer && (leaf.hasPrefix("self_attn.q_norm") || leaf.hasPrefix("self_attn.k_norm"))) {
                if !(inLayer && ["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias", "mlp.gate_proj.bias", "mlp.up_proj.bias"].contains(leaf)) {
                    throw FormatError(file: ckpt.filePath(of: e), tensor: n, "has a dimension of hidden_size (\(H)) but is not a tensor wtool knows how to shrink: refused rather than guessed")
                }
            }
        }
        var scores: [Float]? = nil
        if select != .uniform {
            var acc = [Double](repeating: 0, count: H)
            if let stats {
                // Minitron's channel importance: the normalised residual entering each block
                // (the inputs of q_proj and gate_proj), Σx² summed over layers.
                for prefix in layers {
                    for m in ["self_attn.q_proj.weight", "mlp.gate_proj.weight"] {
                        guard let a = try stats.channelSquares(forWeight: prefix + m, inputs: H, normalized: false) else {
                            throw FormatError(file: stats.path, tensor: prefix + m, "no act_sq_sum for this module: it scores the hidden channels")
                        }
                        for c in 0..<H { acc[c] += a[c] }
                    }
                }
            } else {
                // Weight norms: every weight the channel touches, squared and summed.
                for (name, axis) in axisOf.sorted(by: { $0.key < $1.key }) {
                    let e = ckpt.entry(name)!
                    let v = decodeDoubles(ckpt, e)
                    let s = e.info.shapeInts
                    let cols = s.count == 2 ? s[1] : 1
                    for i in 0..<v.count { acc[axis == 0 ? i / cols : i % cols] += v[i] * v[i] }
                }
            }
            scores = acc.map { Float($0) }
        }
        let keep = choose(H, remove: remove, scores: scores)
        let gathers = axisOf.mapValues { Gather(keep: keep, axis: $0) }
        let outputs: [OutputTensor] = ckpt.entries.map { e in
            var shape = e.info.shape
            if let g = gathers[e.name] { shape[g.axis] = UInt64(g.keep.count) }
            return OutputTensor(name: e.name, dtype: e.info.dtype, shape: shape)
        }
        timer.lap("plan")
        let writer = try out.writer(tensors: outputs)
        do {
            _ = try Engine.map(count: ckpt.entries.count, threads: settings.threads, progress: Progress(total: outputs.count, label: "prune", quiet: settings.quiet)) { i in
                guard writer.owns(i) else { return 0 }
                let e = ckpt.entries[i]
                defer { ckpt.release(e) }
                if let g = gathers[e.name] {
                    try StructuredPruneJob.writeGathered(ckpt.bytes(e), e.info, g, count: outputs[i].count, writer: writer, index: i)
                } else {
                    try writer.write(tensor: i, ckpt.bytes(e))
                }
                return 0
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        let copied = try out.copyAuxiliaryFiles(from: ckpt, edit: { c in
            c.set("hidden_size", .int(keep.count))
            c.set("head_dim", .int(shape.headDim))   // no longer hidden_size / num_attention_heads
        })
        timer.lap("prune")
        report.inputs = inputs.map(RunReport.describe)
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        report.parameters = [("method", .string("structured")), ("target", .string("hidden")), ("sparsity", .double(sparsity)),
                             ("select", .string(select.rawValue)), ("stats", statsPath.map { .string($0) } ?? .null)]
        report.tensors = gathers.keys.sorted().map { .object([("name", .string($0)), ("axis", .int(gathers[$0]!.axis))]) }
        report.summary = [("hidden_size", .int(H)), ("hidden_size_out", .int(keep.count)), ("kept_channels", .array(keep.map { .int($0) })),
                          ("bytes_in", .uint(ckpt.totalBytes)), ("bytes_out", .uint(outputs.reduce(0) { $0 + UInt64($1.byteCount) }))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }
}
