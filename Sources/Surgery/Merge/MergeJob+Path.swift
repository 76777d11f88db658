import SafeTensors
import Foundation

/// `merge --path start:stop:count`: the merges along an interpolation path (linear mode
/// connectivity, WiSE-FT's alpha sweeps, Model Stock's analysis) in one pass over the inputs.
/// Every tensor is read once and every point's output written from it; each point's tensors are
/// byte for byte those of the single merge at that t.
extension MergeJob {
    /// start, start + step, ..., stop: `count` values, both ends included.
    public static func pathPoints(start: Double, stop: Double, count: Int) -> [Double] {
        guard count > 1 else { return [start] }
        return (0..<count).map { i in i == count - 1 ? stop : start + (stop - start) * Double(i) / Double(count - 1) }
    }

    /// Folder names that carry t: `t0.0`, `t0.1`, ... (`t0.00`, `t0.25`, ...) with the fewest
    /// decimals (at least one, at most 9) that write every point exactly, or else tell them apart.
    public static func pathFolderNames(_ ts: [Double]) -> [String] {
        func names(_ d: Int) -> [String] { ts.map { "t" + String(format: "%.\(d)f", $0) } }
        for d in 1...9 where zip(names(d), ts).allSatisfy({ abs(Double($0.dropFirst())! - $1) <= 1e-12 * max(1, abs($1)) }) {
            return names(d)
        }
        return (1...9).lazy.map(names).first { Set($0).count == $0.count } ?? ts.map { "t\($0)" }
    }

    /// The recipe at one point: linear's two weights (1 - t, t), or slerp's t.
    func recipe(at t: Double) throws -> MergeRecipe {
        var r = recipe
        switch r.method {
        case "linear":
            guard let models = r.models, models.count == 2, r.slices == nil else {
                throw UsageError("--path with linear interpolates two models: give exactly two (A B)")
            }
            if models.contains(where: { $0.parameters["weight"] != nil }) {
                throw UsageError("--path sets the weights (1 - t, t): do not give --weight")
            }
            r.models = [models[0], models[1]].enumerated().map { i, m in
                var m = m
                m.parameters["weight"] = .scalar(.number(i == 0 ? 1 - t : t))
                return m
            }
        case "slerp":
            if r.parameters["t"] != nil { throw UsageError("--path sets slerp's t: do not give t") }
            r.parameters["t"] = .scalar(.number(t))
        default:
            throw UsageError("--path interpolates with linear or slerp, not \(r.method)")
        }
        return r
    }

    func runPath(_ ts: [Double]) throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        guard !ts.isEmpty, ts.allSatisfy(\.isFinite) else { throw UsageError("--path needs finite points") }
        if settings.part != nil { throw UsageError("--part splits one checkpoint's shards; --path writes several checkpoints: run the points as separate jobs instead") }
        let plans = try ts.map { try MergePlan(recipe: try recipe(at: $0), outDType: outDType, selection: settings.selection) }
        if seed != nil { throw UsageError("--seed applies to the methods that drop entries at random, not \(plans[0].method.name)") }
        let first = plans[0]
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: first.checkpoints)
        guard case .folder = out.finalLayout else {
            throw UsageError("--path writes one checkpoint per point into a folder: give -o DIR, not a .safetensors file")
        }
        let names = MergeJob.pathFolderNames(ts)
        let outputs = first.items.map { OutputTensor(name: $0.output, dtype: $0.dtype, shape: $0.shape) }
        report.warnings = first.warnings
        report.inputs = first.checkpoints.map(RunReport.describe)
        report.parameters = [("method", .string(first.method.name)), ("path", .array(ts.map { .double($0) })),
                             ("out_dtype", (outDType ?? recipe.outDType ?? recipe.dtype).map { .string($0.rawValue) } ?? .null),
                             ("shard_size", settings.shardSize.map { .uint($0) } ?? .null), ("dry_run", .bool(dryRun))]
        timer.lap("plan")
        if dryRun {
            report.output = .object([("path", .string(output)), ("points", .array(zip(ts, names).map { t, n in
                .object([("t", .double(t)), ("folder", .string(n))]) }))])
            report.tensors = first.items.map { MergeJob.describe($0, first) }
            report.summary = [("tensors", .int(first.items.count)), ("points", .int(ts.count)),
                              ("bytes_out", .int(ts.count * outputs.reduce(0) { $0 + $1.byteCount }))]
            report.timing = timer.phases
            return report
        }
        var writers: [CheckpointWriter] = []
        do {
            for (t, name) in zip(ts, names) {
                writers.append(try out.writer(tensors: outputs, metadata: out.metadata.merging(["wtool.path_t": String(t)]) { $1 }, subfolder: name))
            }
        } catch {
            writers.forEach { $0.abort() }
            throw error
        }
        let rows: [JSONValue]
        do {
            let ws = writers
            rows = try Engine.map(count: first.items.count, threads: settings.threads,
                                  progress: Progress(total: first.items.count, label: "merge path", quiet: settings.quiet)) { i in
                try MergeJob.mergePathTensor(i, plans: plans, writers: ws)
            }
            for w in writers { try w.commit() }
        } catch {
            writers.forEach { $0.abort() }
            throw error
        }
        timer.lap("merge")
        let ref = first.checkpoints[first.reference]
        var points: [JSONValue] = []
        for (k, (t, name)) in zip(ts, names).enumerated() {
            var copied = try out.copyAuxiliaryFiles(from: ref, skipping: first.tokenizerFolder == nil ? [] : OutputPlan.tokenizerFiles,
                                                    weights: outputs, into: name)
            if let tok = first.tokenizerFolder { copied += try out.copyTokenizerFiles(from: tok, into: name) }
            points.append(.object([("t", .double(t)), ("folder", .string(name)),
                                   ("files", .array(writers[k].shards.map { .string($0.displayPath) })),
                                   ("copied", .array(copied.map { .string($0) }))]))
        }
        if let dir = try out.folder() { try AtomicFile.write(Array(recipeText.utf8), to: FileSystem.join(dir, "wtool-recipe.yml")) }
        report.output = .object([("path", .string(output)), ("points", .array(points))])
        report.tensors = rows
        report.summary = [("tensors", .int(first.items.count)), ("points", .int(ts.count)),
                          ("bytes_out", .int(ts.count * outputs.reduce(0) { $0 + $1.byteCount })),
                          ("max_reads_per_tensor", .int(rows.compactMap { $0["reads"]?.doubleValue.map(Int.init) }.max() ?? 0))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }

    /// One tensor at every point: its inputs decoded once (`reads` in the row counts the decodes
    /// of each input), each point merged from them and written to its writer.
    static func mergePathTensor(_ i: Int, plans: [MergePlan], writers: [CheckpointWriter]) throws -> JSONValue {
        let plan = plans[0], item = plan.items[i], cps = plan.checkpoints
        func entry(_ inp: MergePlan.Input) -> Checkpoint.Entry { cps[inp.model].entry(inp.tensor)! }
        var row = rowHeader(item)
        guard item.merge else {
            let src = item.base ?? item.models[0]
            let bytes = cps[src.model].bytes(entry(src))
            for w in writers { try w.write(tensor: i, bytes) }
            return .object(row + [("copied_from", .string(cps[src.model].path)), ("reads", .int(1))])
        }
        let inputs = (item.base.map { [$0] } ?? []) + item.models
        let entries = inputs.map(entry)
        let coeffs = plans.map { $0.method.linearCoefficients(global: $0.items[i].global, perModel: $0.items[i].perModel) }
        if coeffs.allSatisfy({ $0 != nil }) {
            // Streamed in blocks: each input block decoded once, every point combined from it.
            let n = entries[0].info.count, block = 1 << 16, K = inputs.count, outSize = item.dtype.size!
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block * (K + 1))
            let enc = UnsafeMutableRawPointer.allocate(byteCount: block * outSize, alignment: 64)
            defer { scratch.deallocate(); enc.deallocate() }
            var behind = zip(inputs, entries).map { TrailingRelease(cps[$0.model], $1) }
            var start = 0
            while start < n {
                let len = min(block, n - start)
                var ptrs: [UnsafePointer<Float>] = []
                for (k, (inp, e)) in zip(inputs, entries).enumerated() {
                    let size = e.info.dtype.size!
                    Codec.decode(e.info.dtype, cps[inp.model].bytes(e).baseAddress! + start * size, count: len, into: scratch + k * block)
                    behind[k].done(with: start * size ..< (start + len) * size)
                    ptrs.append(UnsafePointer(scratch + k * block))
                }
                for (w, c) in zip(writers, coeffs) {
                    combineLinear(ptrs, c!, count: len, into: scratch + K * block)
                    Codec.encode(scratch + K * block, count: len, as: item.dtype, into: enc)
                    try w.write(tensor: i, at: start * outSize, UnsafeRawBufferPointer(start: enc, count: len * outSize))
                }
                start += len
            }
            return .object(row + [("coefficients", .array(coeffs.map { .array($0!.map { .double($0) }) })), ("reads", .int(1))])
        }
        let base = item.base.map { decodeFloats(cps[$0.model], entry($0)) }
        let models = item.models.map { decodeFloats(cps[$0.model], entry($0)) }
        let shape = item.shape.map { Int(clamping: $0) }
        var perPoint: [JSONValue] = []
        for (k, w) in writers.enumerated() {
            let it = plans[k].items[i]
            let ctx = MergeContext(tensor: item.output, shape: shape, base: base, models: models, global: it.global, perModel: it.perModel, seed: 0)
            let result: MergeOutput
            do { result = try plans[k].method.merge(ctx) } catch let e as MergeError {
                throw FormatError(file: cps[item.models[0].model].path, tensor: item.output, e.description)
            }
            try w.write(floats: result.values, as: item.dtype, tensor: i)
            perPoint.append(.object(result.metrics))
        }
        row.append(("points", .array(perPoint)))
        return .object(row + [("reads", .int(1))])
    }
}
