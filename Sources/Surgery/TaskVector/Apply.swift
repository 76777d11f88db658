import SafeTensors

/// `task-vector apply`: BASE + Σ s_i τ_i (negative scales subtract: forgetting), or the TIES /
/// DARE combination of the task vectors through the same pipeline `merge` uses.
public struct ApplyTaskVectorJob: Sendable {
    public var settings = JobSettings()
    public enum Method: String, Sendable, CaseIterable { case sum, ties, dare }

    public var base: String
    public var vectors: [String]
    public var output: String
    public var kind: TaskVectorSource.Kind = .auto
    public var scales: [Double]?
    public var method: Method = .sum
    public var density = 1.0
    public var lambda = 1.0
    public var normalize: Bool?
    public var rescale: RescaleRule? = .l1
    public var seed: UInt64 = 0
    public var dtype: DType?
    /// aTLAS: a coefficient per (task vector, block) file, and the block names of its `.pt` form.
    public var coefficients: String?
    public var blockOrder: String?

    public init(base: String, vectors: [String], output: String) { self.base = base; self.vectors = vectors; self.output = output }

    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        if coefficients != nil {
            if method != .sum { throw UsageError("--coefficients scale task vectors one block at a time (aTLAS): it goes with --method sum") }
            if self.scales != nil { throw UsageError("--coefficients gives every scale: do not give --scale") }
        } else if blockOrder != nil {
            throw UsageError("--block-order names the blocks of --coefficients")
        }
        let table = try coefficients.map { try TaskCoefficients(path: $0, blockOrder: blockOrder) }
        let scales = self.scales ?? Array(repeating: 1, count: vectors.count)
        guard scales.count == vectors.count else { throw UsageError("--scale: give one value per task vector (\(vectors.count))") }
        guard density > 0 && density <= 1 else { throw UsageError("--density must be in (0, 1]") }
        if let dtype, !dtype.isFloatingPoint { throw UsageError("--dtype must be a float type") }
        let b = try Checkpoint(path: base)
        let tvs = try vectors.map { try TaskVectorSource(path: $0, kind: kind) }
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: [b] + tvs.map(\.checkpoint), part: settings.part)
        report.warnings = b.warnings + tvs.flatMap(\.checkpoint.warnings)
            + settings.selection.unusedPatterns(in: b.tensorNames).map { "pattern '\($0)' matches no tensor" }
        // Every task-vector tensor must exist in the base with the same shape.
        for (tv, path) in zip(tvs, vectors) {
            for e in tv.checkpoint.entries {
                guard let be = b.entry(e.name) else {
                    throw FormatError(file: tv.checkpoint.filePath(of: e), tensor: e.name, "has no counterpart in the base \(base)")
                }
                guard be.info.shape == e.info.shape else {
                    throw FormatError(file: tv.checkpoint.filePath(of: e), tensor: e.name, "shape \(e.info.shape) differs from the base's \(be.info.shape)")
                }
                if !e.info.dtype.isFloatingPoint && tv.isDelta {
                    throw FormatError(file: tv.checkpoint.filePath(of: e), tensor: e.name, "a task vector holds float deltas, not \(e.info.dtype.rawValue)")
                }
            }
            if !tv.recordedChecksums.isEmpty {
                let differing = try Engine.map(count: b.entries.count, threads: settings.threads) { i -> String? in
                    let e = b.entries[i]
                    guard let want = tv.recordedChecksums[e.name] else { return nil }
                    defer { b.release(e) }
                    return checksum(b.bytes(e)) == want ? nil : e.name
                }.compactMap { $0 }
                if !differing.isEmpty {
                    report.warnings.append("\(path) was extracted from another base: \(differing.count) tensor(s) differ from the recorded checksums (first: \(differing[0]))")
                }
            }
        }
        // Every tensor of every task vector in exactly one block, before any work.
        let blockOf = try table?.resolve(taskTensors: tvs.map { tv in tv.checkpoint.entries.filter { $0.info.dtype.isFloatingPoint }.map(\.name) })
        let pipeline: TaskArithmeticPipeline? = method == .sum ? nil : TaskArithmeticPipeline(
            sparsifier: method == .ties ? .magnitude : .random, electSign: method == .ties,
            normalize: normalize ?? (method == .ties), lambda: lambda, rescale: method == .dare ? rescale : nil)
        if let pipeline, !pipeline.electSign, pipeline.normalize, scales.reduce(0, +) == 0 {
            throw UsageError("the scales sum to 0 and normalize is on")
        }
        let outputs = b.entries.map { e in
            OutputTensor(name: e.name, dtype: e.info.dtype.isFloatingPoint ? (dtype ?? e.info.dtype) : e.info.dtype, shape: e.info.shape)
        }
        timer.lap("plan")
        let writer = try out.writer(tensors: outputs)
        let (density, seed, lambda) = (self.density, self.seed, self.lambda)
        let rows: [JSONValue]
        do {
            rows = try Engine.map(count: b.entries.count, threads: settings.threads, progress: Progress(total: b.entries.count, label: "apply", quiet: settings.quiet)) { i in
                let e = b.entries[i]
                guard writer.owns(i) else { return .object([("name", .string(e.name)), ("part", .string("another"))]) }
                let selected = settings.selection.selects(e.name)
                let touched = selected ? tvs.indices.filter { tvs[$0].checkpoint.entry(e.name) != nil } : []
                guard e.info.dtype.isFloatingPoint, !touched.isEmpty else {
                    // Not in any task vector (or not a float): the base's bytes, unchanged.
                    if outputs[i].dtype == e.info.dtype {
                        try writer.write(tensor: i, b.bytes(e))
                    } else {
                        let v = decodeFloats(b, e)
                        try writer.write(floats: v, as: outputs[i].dtype, tensor: i)
                    }
                    b.release(e)
                    return .object([("name", .string(e.name)), ("copied", .bool(true))] + (selected ? [] : [("excluded", .bool(true))]))
                }
                let w = touched.map { t in table.map { $0.values[t][blockOf![e.name]!] } ?? scales[t] }
                var row: [(String, JSONValue)] = [("name", .string(e.name)), ("vectors", .array(touched.map { .int($0) }))]
                if let table, let block = blockOf?[e.name] {
                    row += [("block", .string(table.blocks[block])), ("coefficients", .array(w.map { .double(lambda * $0) }))]
                }
                if let pipeline, e.info.count > settings.blockAbove {
                    let t = try ApplyTaskVectorJob.streamPipeline(pipeline, e, base: b, vectors: touched.map { tvs[$0] }, weights: w, density: density,
                                                                  seed: seed, blockEntries: settings.blockAbove, as: outputs[i].dtype, writer: writer, index: i)
                    row.append(("kept_fraction", .array(t.kept.map { .double($0) })))
                    if let sc = t.signConflicts { row.append(("sign_conflict_fraction", .double(sc))) }
                    row += metric("relative_change", t.baseSquares > 0 ? (t.changeSquares / t.baseSquares).squareRoot() : .nan)
                    row.append(("blocked", .bool(true)))
                } else if let pipeline {
                    let bv = decodeFloats(b, e)
                    var result = [Float](repeating: 0, count: e.info.count)
                    var deltas = touched.map { tvs[$0].delta(e.name, base: bv)! }
                    let r = try pipeline.run(deltas: &deltas, shape: e.info.shapeInts, weights: w,
                                             densities: Array(repeating: density, count: w.count), gammas: Array(repeating: 0, count: w.count),
                                             epsilons: Array(repeating: 0, count: w.count), seed: seed, tensor: e.name)
                    for k in 0..<bv.count { result[k] = Float(Double(bv[k]) + Double(r.mixed[k])) }
                    row.append(("kept_fraction", .array(r.kept.map { .double($0) })))
                    if let sc = r.signConflicts { row.append(("sign_conflict_fraction", .double(sc))) }
                    try writer.write(floats: result, as: outputs[i].dtype, tensor: i)
                    let bn = VectorMath.norm(bv)
                    row += metric("relative_change", bn > 0 ? VectorMath.distance(result, bv) / bn : .nan)
                } else {
                    let (change, baseNorm) = try ApplyTaskVectorJob.streamSum(e, base: b, vectors: touched.map { tvs[$0] }, weights: w.map { lambda * $0 },
                                                                             as: outputs[i].dtype, writer: writer, index: i)
                    row += metric("relative_change", baseNorm > 0 ? change / baseNorm : .nan)
                }
                return .object(row)
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        let copied = try out.copyAuxiliaryFiles(from: b, weights: outputs)
        timer.lap("apply")
        report.inputs = [RunReport.describe(b)] + tvs.map { RunReport.describe($0.checkpoint) }
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        report.parameters = [("method", .string(method.rawValue)), ("scales", table == nil ? .array(scales.map { .double($0) }) : .null),
                             ("coefficients", coefficients.map { .string($0) } ?? .null),
                             ("blocks", table.map { .int($0.blocks.count) } ?? .null),
                             ("lambda", .double(lambda)), ("density", .double(density)), ("seed", .uint(seed)),
                             ("inputs_are", .array(tvs.map { .string($0.isDelta ? "task-vector" : "model") })),
                             ("include", .array(settings.selection.include.map { .string($0) })),
                             ("exclude", .array(settings.selection.exclude.map { .string($0) }))]
        report.tensors = rows
        report.summary = [("tensors", .int(rows.count)), ("changed", .int(rows.filter { $0["copied"] == nil }.count))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }

    /// TIES or DARE over a tensor above `blockEntries` entries, in row blocks: the bits of the
    /// whole-tensor pipeline, a few blocks of memory per input.
    static func streamPipeline(_ pipeline: TaskArithmeticPipeline, _ e: Checkpoint.Entry, base b: Checkpoint, vectors: [TaskVectorSource],
                               weights: [Double], density: Double, seed: UInt64, blockEntries: Int, as dtype: DType,
                               writer: CheckpointWriter, index: Int) throws -> StreamedTaskArithmetic.Totals {
        func reader(_ c: Checkpoint, _ e: Checkpoint.Entry) -> StreamedTaskArithmetic.Reader { blockReader(c, e) }
        let entries = vectors.map { $0.checkpoint.entry(e.name)! }
        let tasks = vectors.indices.map { j in
            StreamedTaskArithmetic.Task(read: reader(vectors[j].checkpoint, entries[j]), isDelta: vectors[j].isDelta, weight: weights[j],
                                        density: density, gamma: 0, epsilon: 0)
        }
        let job = StreamedTaskArithmetic(pipeline: pipeline, shape: e.info.shapeInts, base: reader(b, e), tasks: tasks, seed: seed,
                                         tensor: e.name, blockEntries: StreamedTaskArithmetic.blockEntries(threshold: blockEntries))
        let size = dtype.size!
        let enc = UnsafeMutableRawPointer.allocate(byteCount: max(1, job.blockLength) * size, alignment: 64)
        defer { enc.deallocate() }
        let totals = try job.run { start, values in
            Codec.encode(values.baseAddress!, count: values.count, as: dtype, into: enc)
            try writer.write(tensor: index, at: start * size, UnsafeRawBufferPointer(start: enc, count: values.count * size))
        }
        b.release(e)
        for (v, te) in zip(vectors, entries) { v.checkpoint.release(te) }
        return totals
    }

    /// Plain task arithmetic, BASE + Σ c_i τ_i in f64 per entry, streamed in pieces of 2^18 entries
    /// so memory stays a few MB per tensor whatever its size (exact for F64 task vectors, so extract +
    /// apply rebuilds an f32 fine-tune bit for bit). Returns ||out - base|| and ||base|| (f64,
    /// over the f32 values as written).
    static func streamSum(_ e: Checkpoint.Entry, base b: Checkpoint, vectors: [TaskVectorSource], weights: [Double],
                          as dtype: DType, writer: CheckpointWriter, index: Int) throws -> (Double, Double) {
        let n = e.info.count, piece = 1 << 18
        let entries = vectors.map { $0.checkpoint.entry(e.name)! }
        let bd = UnsafeMutablePointer<Double>.allocate(capacity: piece), td = UnsafeMutablePointer<Double>.allocate(capacity: piece)
        let acc = UnsafeMutablePointer<Double>.allocate(capacity: piece), out = UnsafeMutablePointer<Float>.allocate(capacity: piece)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: piece * dtype.size!, alignment: 64)
        defer { bd.deallocate(); td.deallocate(); acc.deallocate(); out.deallocate(); raw.deallocate() }
        b.willNeed(e)
        for (v, te) in zip(vectors, entries) { v.checkpoint.willNeed(te) }
        let baseBytes = b.bytes(e), inSize = e.info.dtype.size!
        var changeSq = 0.0, baseSq = 0.0
        var start = 0
        while start < n {
            let m = min(piece, n - start)
            Codec.decode(e.info.dtype, baseBytes.baseAddress! + start * inSize, count: m, into: bd)
            for k in 0..<m { acc[k] = bd[k] }
            for (j, (v, te)) in zip(vectors, entries).enumerated() {
                let tb = v.checkpoint.bytes(te)
                Codec.decode(te.info.dtype, tb.baseAddress! + start * te.info.dtype.size!, count: m, into: td)
                let c = weights[j]
                if v.isDelta {
                    for k in 0..<m { acc[k] += c * td[k] }
                } else {
                    for k in 0..<m { acc[k] += c * (td[k] - bd[k]) }
                }
            }
            for k in 0..<m {
                out[k] = Float(acc[k])
                let bf = Double(Float(bd[k])), d = Double(out[k]) - bf
                changeSq += d * d
                baseSq += bf * bf
            }
            Codec.encode(out, count: m, as: dtype, into: raw)
            try writer.write(tensor: index, at: start * dtype.size!, UnsafeRawBufferPointer(start: raw, count: m * dtype.size!))
            start += m
        }
        b.release(e)
        for (v, te) in zip(vectors, entries) { v.checkpoint.release(te) }
        return (changeSq.squareRoot(), baseSq.squareRoot())
    }
}
