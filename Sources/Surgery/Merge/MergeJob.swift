import SafeTensors

/// `wtool merge`: plan (every check), then merge tensor by tensor on the engine, write, report.
public struct MergeJob: Sendable {
    public var settings = JobSettings()
    public var recipe: MergeRecipe
    /// The recipe as the user gave it, copied into the output folder as wtool-recipe.yml.
    public var recipeText: String
    public var output: String
    public var outDType: DType?
    /// DARE's and DELLA's seed (nil: 0); refused for the methods that draw nothing.
    public var seed: UInt64?
    static let randomMethods: Set<String> = ["dare_ties", "dare_linear", "della", "della_linear"]
    public var dryRun = false
    /// `--path`: the points t of an interpolation path (nil: one merge).
    public var path: [Double]?

    public init(recipe: MergeRecipe, recipeText: String, output: String) {
        self.recipe = recipe; self.recipeText = recipeText; self.output = output
    }

    public func run() throws -> RunReport {
        if let path { return try runPath(path) }
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let plan = try MergePlan(recipe: recipe, outDType: outDType, selection: settings.selection)
        if seed != nil && !MergeJob.randomMethods.contains(plan.method.name) {
            throw UsageError("--seed applies to the methods that drop entries at random (dare_ties, dare_linear, della, della_linear), not \(plan.method.name)")
        }
        let seed = self.seed ?? 0
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: plan.checkpoints,
                                 part: settings.part)
        report.warnings = plan.warnings
        report.inputs = plan.checkpoints.map(RunReport.describe)
        report.parameters = [("method", .string(plan.method.name)), ("seed", .uint(seed)),
                             ("base_model", recipe.baseModel.map { .string($0) } ?? .null),
                             ("out_dtype", (outDType ?? recipe.outDType ?? recipe.dtype).map { .string($0.rawValue) } ?? .null),
                             ("shard_size", settings.shardSize.map { .uint($0) } ?? .null), ("dry_run", .bool(dryRun)),
                             ("tokenizer_source", plan.tokenizerFolder.map { .string($0) } ?? .null),
                             ("include", .array(settings.selection.include.map { .string($0) })),
                             ("exclude", .array(settings.selection.exclude.map { .string($0) })),
                             ("models", .array(plan.resolutions.map { r in
                                 .object([("reference", .string(r.reference)), ("path", .string(r.path)), ("resolved_against", .string(r.against))])
                             }))]
        let outputs = plan.items.map { OutputTensor(name: $0.output, dtype: $0.dtype, shape: $0.shape) }
        timer.lap("plan")
        if dryRun {
            let files = CheckpointWriter.plannedFiles(layout: out.finalLayout, tensors: outputs)
            report.output = .object([("path", .string(output)), ("files", .array(files.map { .string($0.path) }))])
            report.tensors = plan.items.map { MergeJob.describe($0, plan) }
            report.summary = [("tensors", .int(plan.items.count)), ("bytes_out", .int(outputs.reduce(0) { $0 + $1.byteCount })),
                              ("shards", .int(files.count))]
            report.timing = timer.phases
            return report
        }
        let writer = try out.writer(tensors: outputs)
        let rows: [JSONValue]
        do {
            rows = try Engine.map(count: plan.items.count, threads: settings.threads,
                                  progress: Progress(total: plan.items.count, label: "merge", quiet: settings.quiet)) { i in
                guard writer.owns(i) else { return .object([("name", .string(plan.items[i].output)), ("part", .string("another"))]) }
                return try MergeJob.mergeTensor(plan.items[i], plan: plan, seed: seed, writer: writer, index: i, blockAbove: settings.blockAbove)
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        timer.lap("merge")
        var copied: [String] = []
        if let dir = try out.folder() {
            let ref = plan.checkpoints[plan.reference]
            let tokenizer = plan.tokenizerFolder, layers = plan.layerCount
            copied = try out.copyAuxiliaryFiles(from: ref, skipping: Set(["wtool-recipe.yml"]).union(tokenizer == nil ? [] : OutputPlan.tokenizerFiles),
                                                weights: outputs, edit: { c in if let layers { c.set("num_hidden_layers", .int(layers)) } })
            if let tokenizer { copied += try out.copyTokenizerFiles(from: tokenizer) }
            try AtomicFile.write(Array(recipeText.utf8), to: FileSystem.join(dir, "wtool-recipe.yml"))
        }
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        report.tensors = rows
        report.summary = MergeJob.summarize(rows, outputs)
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }

    /// One tensor: decode the inputs to f32, merge, encode, write; measure deltas and the change.
    static func mergeTensor(_ item: MergePlan.Item, plan: MergePlan, seed: UInt64, writer: CheckpointWriter, index: Int,
                            blockAbove: Int) throws -> JSONValue {
        let cps = plan.checkpoints
        func entry(_ i: MergePlan.Input) -> Checkpoint.Entry { cps[i.model].entry(i.tensor)! }
        guard item.merge else {
            // Integer tensors, and tensors --include/--exclude leave out: the base's bytes (or the
            // first model's), unchanged.
            let src = item.base ?? item.models[0]
            try writer.write(tensor: index, cps[src.model].bytes(entry(src)))
            return .object([("name", .string(item.output)), ("copied_from", .string(cps[src.model].path)),
                            ("reason", .string(item.excluded ? "excluded" : "not a float tensor"))])
        }
        if let coeffs = plan.method.linearCoefficients(global: item.global, perModel: item.perModel) {
            return try streamLinear(item, coeffs: coeffs, plan: plan, writer: writer, index: index)
        }
        // The task-arithmetic family always runs in blocks (same bytes, and blocks stay in cache
        // between its passes where whole tensors would be read from memory for each); the other
        // methods when the tensor is above blockAbove.
        if item.shape.reduce(1, *) > UInt64(blockAbove) || plan.method is TaskArithmeticMerge,
           let row = try streamBlocks(item, plan: plan, seed: seed, writer: writer, index: index, blockAbove: blockAbove) {
            return row
        }
        func load(_ i: MergePlan.Input) -> [Float] { decodeFloats(cps[i.model], entry(i)) }
        let base = item.base.map(load)
        var models = item.models.map(load)
        let shape = item.shape.map { Int(clamping: $0) }
        // Measured before merging: the method takes the decoded arrays over.
        let geometry = base.map { VectorMath.deltaGeometry(models, base: $0) }
        let ctx = MergeContext(tensor: item.output, shape: shape, base: base, models: models,
                               global: item.global, perModel: item.perModel, seed: seed)
        models = []
        let result: MergeOutput
        do { result = try plan.method.merge(ctx) } catch let e as MergeError {
            throw FormatError(file: cps[item.models[0].model].path, tensor: item.output, e.description)
        }
        try writer.write(floats: result.values, as: item.dtype, tensor: index)

        var row = rowHeader(item)
        if let base, let g = geometry {
            row.append(("delta_norms", .array(g.norms.map { .double($0) })))
            let M = g.norms.count
            if M > 1 {
                var cos: [JSONValue] = [], k = 0
                for i in 0..<M {
                    for j in (i + 1)..<M {
                        let den = g.norms[i] * g.norms[j]
                        cos.append(.double(den > 0 ? g.dots[k] / den : .nan))
                        k += 1
                    }
                }
                row.append(("delta_cosines", .array(cos)))
            }
            let bn = VectorMath.norm(base)
            row += metric("relative_change", bn > 0 ? VectorMath.distance(result.values, base) / bn : .nan)
        }
        row += result.metrics
        return .object(row)
    }

    /// A linear combination, streamed in blocks of 64k entries: decode each input block, combine in
    /// f64, encode, write. Memory stays a few blocks whatever the tensor size, and the report's
    /// delta geometry is accumulated on the way.
    static func streamLinear(_ item: MergePlan.Item, coeffs: [Double], plan: MergePlan, writer: CheckpointWriter, index: Int,
                             metrics: [(String, JSONValue)] = []) throws -> JSONValue {
        let cps = plan.checkpoints
        let inputs = (item.base.map { [$0] } ?? []) + item.models
        precondition(inputs.count == coeffs.count, "linearCoefficients: one per input")
        let entries = inputs.map { cps[$0.model].entry($0.tensor)! }
        for (inp, e) in zip(inputs, entries) { cps[inp.model].willNeed(e) }
        let n = entries[0].info.count, block = 1 << 16, K = inputs.count
        let outSize = item.dtype.size!
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block * (K + 1))
        let enc = UnsafeMutableRawPointer.allocate(byteCount: block * outSize, alignment: 64)
        defer { scratch.deallocate(); enc.deallocate() }
        var behind = zip(inputs, entries).map { TrailingRelease(cps[$0.model], $1) }
        let hasBase = item.base != nil
        let M = item.models.count
        var squares = [Double](repeating: 0, count: M), dots = [Double](repeating: 0, count: M * (M - 1) / 2)
        var change = 0.0, baseSq = 0.0
        var start = 0
        while start < n {
            let len = min(block, n - start)
            var ptrs: [UnsafePointer<Float>] = []
            for (k, (inp, e)) in zip(inputs, entries).enumerated() {
                let dst = scratch + k * block
                Codec.decode(e.info.dtype, cps[inp.model].bytes(e).baseAddress! + start * e.info.dtype.size!, count: len, into: dst)
                behind[k].done(with: start * e.info.dtype.size! ..< (start + len) * e.info.dtype.size!)
                ptrs.append(UnsafePointer(dst))
            }
            let out = scratch + K * block
            combineLinear(ptrs, coeffs, count: len, into: out)
            if hasBase {
                let g = VectorMath.deltaSums(Array(ptrs[1...]), base: ptrs[0], count: len)
                for m in 0..<M { squares[m] += g.squares[m] }
                for p in dots.indices { dots[p] += g.dots[p] }
                change += VectorMath.deltaSums([UnsafePointer(out)], base: ptrs[0], count: len).squares[0]
                baseSq += VectorMath.dot(ptrs[0], ptrs[0], len)
            }
            Codec.encode(out, count: len, as: item.dtype, into: enc)
            try writer.write(tensor: index, at: start * outSize, UnsafeRawBufferPointer(start: enc, count: len * outSize))
            start += len
        }
        for (inp, e) in zip(inputs, entries) { cps[inp.model].release(e) }
        var row = rowHeader(item)
        if hasBase { row += geometryMetrics(squares: squares, dots: dots, change: change, baseSquares: baseSq) }
        row.append(("coefficients", .array(coeffs.map { .double($0) })))
        return .object(row + metrics)
    }

    /// Σ_k coeffs[k] · x_k in f64 per entry, rounded once to f32 (the one linear kernel: a single
    /// merge and every point of a --path compute the same bytes).
    static func combineLinear(_ ptrs: [UnsafePointer<Float>], _ coeffs: [Double], count len: Int, into out: UnsafeMutablePointer<Float>) {
        if ptrs.count == 2 {
            let (p0, p1, c0, c1) = (ptrs[0], ptrs[1], coeffs[0], coeffs[1])
            for j in 0..<len { out[j] = Float(c0 * Double(p0[j]) + c1 * Double(p1[j])) }
        } else {
            for j in 0..<len {
                var s = 0.0
                for k in 0..<ptrs.count { s += coeffs[k] * Double(ptrs[k][j]) }
                out[j] = Float(s)
            }
        }
    }

    /// The report row's opening fields, the same for every merge path.
    static func rowHeader(_ item: MergePlan.Item) -> [(String, JSONValue)] {
        var row: [(String, JSONValue)] = [("name", .string(item.output)), ("shape", .array(item.shape.map { .uint($0) })),
                                          ("dtype", .string(item.dtype.rawValue)), ("t", .double(item.t))]
        if item.models.contains(where: { $0.tensor != item.output }) {
            row.append(("inputs", .array(item.models.map { .string($0.tensor) })))
        }
        row.append(("parameters", parameterJSON(item)))
        return row
    }

    /// delta_norms, delta_cosines and relative_change from streamed sums of squares.
    static func geometryMetrics(squares: [Double], dots: [Double], change: Double, baseSquares: Double) -> [(String, JSONValue)] {
        var row: [(String, JSONValue)] = [("delta_norms", .array(squares.map { .double($0.squareRoot()) }))]
        let M = squares.count
        if M > 1 {
            var cos: [JSONValue] = [], k = 0
            for i in 0..<M { for j in (i + 1)..<M {
                let den = (squares[i] * squares[j]).squareRoot()
                cos.append(.double(den > 0 ? dots[k] / den : .nan)); k += 1
            } }
            row.append(("delta_cosines", .array(cos)))
        }
        return row + metric("relative_change", baseSquares > 0 ? (change / baseSquares).squareRoot() : .nan)
    }

    static func parameterJSON(_ item: MergePlan.Item) -> JSONValue {
        func obj(_ d: [String: ParamValue]) -> JSONValue {
            .object(d.sorted { $0.key < $1.key }.map { k, v in
                switch v {
                case let .number(x): return (k, .double(x))
                case let .bool(b): return (k, .bool(b))
                case let .string(s): return (k, .string(s))
                }
            })
        }
        return .object([("global", obj(item.global)), ("models", .array(item.perModel.map(obj)))])
    }

    static func describe(_ item: MergePlan.Item, _ plan: MergePlan) -> JSONValue {
        .object([("name", .string(item.output)), ("shape", .array(item.shape.map { .uint($0) })), ("dtype", .string(item.dtype.rawValue)),
                 ("t", .double(item.t)), ("inputs", .array(item.models.map { .string(plan.checkpoints[$0.model].path + ":" + $0.tensor) })),
                 ("base", item.base.map { .string(plan.checkpoints[$0.model].path + ":" + $0.tensor) } ?? .null),
                 ("parameters", parameterJSON(item))] + (item.merge ? [] : [("copied", .bool(true)), ("excluded", .bool(item.excluded))]))
    }

    static func summarize(_ rows: [JSONValue], _ outputs: [OutputTensor]) -> [(String, JSONValue)] {
        let changes = rows.compactMap { $0["relative_change"]?.doubleValue }
        var s: [(String, JSONValue)] = [("tensors", .int(rows.count)), ("bytes_out", .int(outputs.reduce(0) { $0 + $1.byteCount })),
                                        ("copied", .int(rows.filter { $0["copied_from"] != nil }.count))]
        if !changes.isEmpty {
            s.append(("relative_change_max", .double(changes.max()!)))
            s.append(("relative_change_mean", .double(changes.reduce(0, +) / Double(changes.count))))
        }
        let conflicts = rows.compactMap { $0["sign_conflict_fraction"]?.doubleValue }
        if !conflicts.isEmpty { s.append(("sign_conflict_fraction_mean", .double(conflicts.reduce(0, +) / Double(conflicts.count)))) }
        return s
    }
}
