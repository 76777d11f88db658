import SafeTensors
import Linalg

/// `lowrank-svd extract`: FT - BASE of every 2-D linear weight, truncated by SVD, written as a PEFT
/// LoRA adapter whose merged weight is BASE plus the truncation (scale alpha / r = 1 for every
/// module: per-module ranks go to rank_pattern and alpha_pattern alike).
public struct ExtractLoRAJob: Sendable {
    public enum Split: String, Sendable, CaseIterable { case sqrt, left }
    public enum Embeddings: String, Sendable, CaseIterable { case lora, full, skip }

    public var base: String
    public var finetuned: String
    public var output: String
    public var policy: RankPolicy = .rank(64)
    public var split: Split = .sqrt
    public var embeddings: Embeddings = .full
    /// Other changed tensors (norms, biases of untargeted modules): saved in full, or skipped.
    public var saveOthers = true
    /// Write a DoRA adapter: the same factors plus each output feature's magnitude in FT.
    public var dora = false
    public var svd = SVDChoice()
    public var settings = JobSettings()

    public init(base: String, finetuned: String, output: String) { self.base = base; self.finetuned = finetuned; self.output = output }

    enum Kind: Sendable { case linear, embedding, full, bias(module: String) }

    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        guard !output.hasSuffix(".safetensors") else { throw UsageError("an adapter is a folder (adapter_config.json + adapter_model.safetensors): give a folder as -o") }
        let b = try Checkpoint(path: base), ft = try Checkpoint(path: finetuned)
        if settings.part != nil { throw UsageError("--part is not supported by lowrank-svd extract (an adapter is one file)") }
        let out = try OutputPlan(path: output, shardSize: nil, provenance: settings.provenance, inputs: [b, ft])
        let linear = Set(LowRankTargets.select(ft, settings.selection).map(\.name))
        // Plan: what each changed tensor becomes.
        var steps: [(Checkpoint.Entry, Kind)] = []
        var skipped: [String] = []
        for e in ft.entries {
            guard let be = b.entry(e.name) else { throw FormatError(file: ft.filePath(of: e), tensor: e.name, "not in the base \(base)") }
            guard be.info.shape == e.info.shape else {
                throw FormatError(file: ft.filePath(of: e), tensor: e.name, "shape \(e.info.shape) differs from the base's \(be.info.shape) (a resized vocabulary cannot be a LoRA delta)")
            }
            guard e.info.dtype.isFloatingPoint else { continue }
            if ft.bytes(e).elementsEqual(b.bytes(be)) { continue }  // unchanged
            let n = e.name.lowercased()
            let isEmbedding = n.contains("embed") && e.info.shape.count == 2
            let isHead = e.name.hasSuffix("lm_head.weight")
            if linear.contains(e.name) {
                steps.append((e, .linear))
            } else if isEmbedding || isHead {
                switch embeddings {
                case .lora: steps.append((e, isEmbedding ? .embedding : .linear))
                case .full: steps.append((e, .full))
                case .skip: skipped.append(e.name)
                }
            } else if e.name.hasSuffix(".bias"), linear.contains(String(e.name.dropLast(5)) + ".weight") {
                steps.append((e, .bias(module: String(e.name.dropLast(5)))))
            } else if saveOthers {
                steps.append((e, .full))
            } else {
                skipped.append(e.name)
            }
        }
        let plan = steps
        timer.lap("plan")
        // Matrices whose SVD is products with the whole matrix (randomized, iterative exact) run
        // two at a time, every worker sharing the products of each (so the last one alone still
        // has every core, and memory holds two deltas whatever the core count); the rest (small
        // exact SVDs, copies) one worker each, several at once.
        let job = self
        let shared = plan.indices.filter { i in
            switch plan[i].1 {
            case .linear, .embedding:
                let shape = plan[i].0.info.shapeInts
                return svd.sharesWorkers(rank: policy.fixedRank, rows: shape[0], cols: shape[1])
            default: return false
            }
        }
        let sharedSet = Set(shared), alone = plan.indices.filter { !sharedSet.contains($0) }
        let progress = Progress(total: plan.count, label: "extract", quiet: settings.quiet)
        let threads = settings.threads
        let buffers = DeltaBuffers()
        let aloneResults = try Engine.map(count: alone.count, threads: threads, progress: progress) { j in
            try job.factor(plan[alone[j]].0, plan[alone[j]].1, b: b, ft: ft, threads: 1, buffers: buffers)
        }
        let sharedResults = try Engine.map(count: shared.count, threads: min(threads, 2), progress: progress) { j in
            try job.factor(plan[shared[j]].0, plan[shared[j]].1, b: b, ft: ft, threads: threads, buffers: buffers)
        }
        var byIndex = [Factored?](repeating: nil, count: plan.count)
        for (j, i) in alone.enumerated() { byIndex[i] = aloneResults[j] }
        for (j, i) in shared.enumerated() { byIndex[i] = sharedResults[j] }
        let results = byIndex.map { $0! }
        timer.lap("svd")
        // The adapter: tensors, then the config with ranks and alphas per module.
        var tensors: [(String, DType, [Int], [Float])] = []
        var ranks: [(String, Int)] = []
        var toSave: [String] = []
        var rows: [JSONValue] = []
        var anyBias = false
        for r in results {
            tensors += r.tensors
            if let (m, k) = r.rank { ranks.append((m, k)) }
            if let s = r.saved { toSave.append(s) }
            if r.bias { anyBias = true }
            rows.append(r.row)
        }
        let maxRank = ranks.map(\.1).max() ?? 0
        var config = PEFTAdapterConfig()
        config.r = max(1, maxRank)
        config.loraAlpha = Double(config.r)
        config.rankPattern = ranks.filter { $0.1 != config.r }.map { ($0.0, $0.1) }
        config.alphaPattern = config.rankPattern.map { ($0.0, Double($0.1)) }
        config.targetModules = .list(uniqued(ranks.map { String($0.0.split(separator: ".").last!) }).sorted())
        config.modulesToSave = uniqued(toSave.map { String($0.split(separator: ".").last!) }).sorted()
        config.loraBias = anyBias
        config.baseModel = base
        if dora {
            if anyBias { throw UsageError("--format dora: the fine-tune changed biases of adapted modules, which DoRA cannot carry (PEFT refuses lora_bias with DoRA); use --format lora") }
            config.kind = .dora
        }
        try ExtractLoRAJob.writeAdapter(try out.folder()!, config: config, tensors: tensors, provenance: settings.provenance)
        timer.lap("write")
        report.inputs = [RunReport.describe(b), RunReport.describe(ft)]
        report.output = .object([("path", .string(output)), ("files", .array([.string(FileSystem.join(output, PEFTAdapterConfig.configName)),
                                                                             .string(FileSystem.join(output, PEFTAdapterConfig.weightsName))]))])
        report.parameters = [("policy", .string("\(policy)")), ("split", .string(split.rawValue)), ("embeddings", .string(embeddings.rawValue))]
            + svd.parameters
        report.tensors = rows
        report.summary = [("lora_modules", .int(ranks.count)), ("max_rank", .int(maxRank)), ("modules_to_save", .array(toSave.map { .string($0) })),
                          ("skipped", .array(skipped.map { .string($0) })),
                          ("adapter_bytes", .int(tensors.reduce(0) { $0 + $1.3.count * $1.1.size! }))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }

    struct Factored: Sendable {
        var tensors: [(String, DType, [Int], [Float])] = []
        var rank: (String, Int)?
        var saved: String?
        var bias = false
        var row: JSONValue = .null
    }

    func factor(_ e: Checkpoint.Entry, _ kind: Kind, b: Checkpoint, ft: Checkpoint, threads: Int, buffers: DeltaBuffers) throws -> Factored {
        let be = b.entry(e.name)!
        let p = PEFTAdapterConfig.prefix
        var out = Factored()
        let module = e.name.hasSuffix(".weight") ? String(e.name.dropLast(7)) : e.name
        switch kind {
        case .full:
            out.tensors = [(p + e.name, e.info.dtype, e.info.shapeInts, decodeFloats(ft, e))]
            out.saved = module
            out.row = .object([("name", .string(e.name)), ("as", .string("modules_to_save"))])
        case let .bias(m):
            out.tensors = [(p + m + ".lora_B.bias", e.info.dtype, e.info.shapeInts, LowRankDelta.decode(ft: ft, e, base: b, be, threads: threads).delta)]
            out.bias = true
            out.row = .object([("name", .string(e.name)), ("as", .string("lora_B.bias"))])
        case .linear, .embedding:
            let isEmbedding: Bool = { if case .embedding = kind { return true }; return false }()
            let (rows, cols) = (e.info.shapeInts[0], e.info.shapeInts[1])
            var delta: [Float], normSq: Double
            (delta, normSq) = LowRankDelta.decode(ft: ft, e, base: b, be, threads: threads, buffers: buffers)
            guard normSq.isFinite else {   // Σ delta² of finite f32 values cannot overflow an f64
                throw FormatError(file: ft.filePath(of: e), tensor: e.name, "FT - BASE has NaN or infinite values, which no SVD can factor")
            }
            // PEFT's embedding delta is (B A)^T: factor the transpose.
            var a = Matrix(rows: rows, cols: cols, data: delta)
            delta = []   // `a` holds the only reference, so the array goes back unshared
            if isEmbedding { a = a.transposed }
            defer { buffers.give(a.data) }   // the next matrix decodes into it
            let opts = svd.options(rank: policy.fixedRank, rows: a.rows, cols: a.cols, stream: e.name, threads: threads)
            let t: TruncatedSVD, why: String
            if let r = policy.fixedRank {
                t = try TruncatedSVD(a, rank: r, options: opts)
                why = "rank \(r)"
            } else {
                let full = try TruncatedSVD(a, rank: min(a.rows, a.cols), options: opts)
                let (k, w) = policy.choose(full.s, total: normSq)
                t = TruncatedSVD(u: full.u, s: full.s, vt: full.vt, keep: k)
                why = w
            }
            let k = t.rank
            guard k > 0 else {
                out.row = .object([("name", .string(e.name)), ("as", .string("skipped: rank 0"))])
                return out
            }
            // B A = U_k diag(s) V_k^T: sqrt splits sqrt(s) into both (mergekit); left puts s in B (PEFT's converter).
            var bm = t.u, am = t.vt
            for j in 0..<k {
                let (sb, sa): (Float, Float) = split == .sqrt ? (t.s[j].squareRoot(), t.s[j].squareRoot()) : (t.s[j], 1)
                for i in 0..<bm.rows { bm[i, j] *= sb }
                for c in 0..<am.cols { am[j, c] *= sa }
            }
            let errSq = LowRankDelta.residualSq(a, bm, am, threads: threads)
            let (nameA, nameB) = isEmbedding ? (".lora_embedding_A", ".lora_embedding_B") : (".lora_A.weight", ".lora_B.weight")
            out.tensors = [(p + module + nameA, e.info.dtype, [k, am.cols], am.data), (p + module + nameB, e.info.dtype, [bm.rows, k], bm.data)]
            out.rank = (module, k)
            var doraError: Double? = nil
            if dora {
                // m = FT's norm per output feature (rows of a Linear, columns of an embedding);
                // PEFT then merges m / ||BASE + B A|| · (BASE + B A).
                let fv = decodeFloats(ft, e), bv = decodeFloats(b, be)
                let features = isEmbedding ? cols : rows
                var m = [Double](repeating: 0, count: features), v = [Double](repeating: 0, count: features)
                var approxLaid = matmul(bm, am)
                if isEmbedding { approxLaid = approxLaid.transposed }
                for r in 0..<rows {
                    for c in 0..<cols {
                        let f = Double(fv[r * cols + c]), x = Double(Float(Double(bv[r * cols + c]) + Double(approxLaid.data[r * cols + c])))
                        m[isEmbedding ? c : r] += f * f
                        v[isEmbedding ? c : r] += x * x
                    }
                }
                let magnitude = m.map { Float($0.squareRoot()) }
                var errSq = 0.0
                for r in 0..<rows {
                    for c in 0..<cols {
                        let k = isEmbedding ? c : r
                        let x = Double(Float(Double(bv[r * cols + c]) + Double(approxLaid.data[r * cols + c])))
                        let merged = v[k] > 0 ? Double(magnitude[k]) / v[k].squareRoot() * x : x
                        let d = merged - Double(fv[r * cols + c])
                        errSq += d * d
                    }
                }
                doraError = normSq > 0 ? (errSq / normSq).squareRoot() : 0
                out.tensors.append((p + module + ".lora_magnitude_vector", e.info.dtype, [features], magnitude))
            }
            let kept = t.s.reduce(0.0) { $0 + Double($1) * Double($1) }
            var row: [(String, JSONValue)] = [("name", .string(e.name)), ("as", .string(isEmbedding ? "lora_embedding" : "lora")),
                                              ("rank", .int(k)), ("why", .string(why)), ("svd", .string(opts.method.rawValue))]
            row += SVDChoice.measured(t)
            row += metric("energy_kept", normSq > 0 ? kept / normSq : 1)
            row += metric("relative_error", normSq > 0 ? (errSq / normSq).squareRoot() : 0)
            if let doraError { row += metric("dora_relative_error", doraError) }
            row += metric("sigma_ratio", t.s[k - 1] > 0 ? Double(t.s[0] / t.s[k - 1]) : .nan)
            row += [("bytes_before", .int(rows * cols * e.info.dtype.size!)), ("bytes_after", .int((rows + cols) * k * e.info.dtype.size!))]
            out.row = .object(row)
        }
        return out
    }

    /// adapter_model.safetensors (one file, `format: pt`) and adapter_config.json (sorted keys).
    static func writeAdapter(_ dir: String, config: PEFTAdapterConfig, tensors: [(String, DType, [Int], [Float])], provenance: String) throws {
        let outs = tensors.map { OutputTensor(name: $0.0, dtype: $0.1, shape: $0.2) }
        let w = try CheckpointWriter(layout: .folder(dir, shardSize: nil), tensors: outs, metadata: ["format": "pt", "wtool.command": provenance])
        do {
            for (i, t) in tensors.enumerated() { try w.write(floats: t.3, as: t.1, tensor: i) }
            try w.commit()
        } catch {
            w.abort()
            throw error
        }
        // The writer names a single file model.safetensors; PEFT reads adapter_model.safetensors.
        let from = FileSystem.join(dir, "model.safetensors"), to = FileSystem.join(dir, PEFTAdapterConfig.weightsName)
        guard rename(from, to) == 0 else { throw FormatError(file: to, "cannot rename into place") }
        try AtomicFile.write(Array((config.json.pretty(indent: 2, sortKeys: true) + "\n").utf8), to: FileSystem.join(dir, PEFTAdapterConfig.configName))
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
