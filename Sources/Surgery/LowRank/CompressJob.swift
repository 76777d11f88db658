import SafeTensors
import Linalg

/// `lowrank-svd compress`: each selected 2-D weight becomes its best rank-k approximation (same
/// name, shape and dtype), or with `factored` two factors `<name>.left` = U_k diag(σ) [out, k] and
/// `<name>.right` = V_kᵀ [k, in]. Other tensors are copied byte for byte.
public struct CompressJob: Sendable {
    public var input: String
    public var output: String
    public var policy: RankPolicy = .rank(64)
    public var factored = false
    public var svd = SVDChoice()
    public var settings = JobSettings()

    public init(input: String, output: String) { self.input = input; self.output = output }


    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        if factored && policy.fixedRank == nil { throw UsageError("--factored needs --rank (the factors' shapes are written before any SVD)") }
        if svd.method == .randomized && policy.fixedRank == nil { throw UsageError("--svd randomized needs --rank: the other rules need the whole spectrum") }
        let src = try Checkpoint(path: input)
        if settings.part != nil { throw UsageError("--part is not supported by lowrank-svd compress (a factored weight's two tensors can fall in different parts)") }
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: [src])
        let targets = Set(LowRankTargets.select(src, settings.selection).map(\.name))
        var outputs: [OutputTensor] = []
        var steps: [(entry: Checkpoint.Entry, outIndex: [Int])] = []
        for e in src.entries {
            if targets.contains(e.name), factored, let r = policy.fixedRank {
                let k = min(r, e.info.shapeInts[0], e.info.shapeInts[1])
                steps.append((e, [outputs.count, outputs.count + 1]))
                outputs.append(OutputTensor(name: e.name + ".left", dtype: e.info.dtype, shape: [e.info.shape[0], UInt64(k)]))
                outputs.append(OutputTensor(name: e.name + ".right", dtype: e.info.dtype, shape: [UInt64(k), e.info.shape[1]]))
            } else {
                steps.append((e, [outputs.count]))
                outputs.append(OutputTensor(name: e.name, dtype: e.info.dtype, shape: e.info.shape))
            }
        }
        let plan = steps
        timer.lap("plan")
        let writer = try out.writer(tensors: outputs)
        let job = self
        let rows: [JSONValue]
        do {
            rows = try Engine.map(count: plan.count, threads: settings.threads,
                                  progress: Progress(total: plan.count, label: "compress", quiet: settings.quiet)) { i -> JSONValue in
                let (e, outIndex) = plan[i]
                guard targets.contains(e.name) else {
                    try writer.write(tensor: outIndex[0], src.bytes(e))
                    src.release(e)
                    return .object([("name", .string(e.name)), ("target", .bool(false))])
                }
                return try job.compress(e, src: src, writer: writer, outIndex: outIndex)
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        let copied = try out.copyAuxiliaryFiles(from: src)
        timer.lap("compress")
        report.inputs = [RunReport.describe(src)]
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        report.parameters = [("policy", .string("\(policy)")), ("factored", .bool(factored))] + svd.parameters
        report.tensors = rows
        let t = rows.filter { $0["target"] == .bool(true) }
        report.summary = [("targets", .int(t.count)),
                          ("bytes_before", .double(t.compactMap { $0["bytes_before"]?.doubleValue }.reduce(0, +))),
                          ("bytes_after", .double(t.compactMap { $0["bytes_after"]?.doubleValue }.reduce(0, +)))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }

    func compress(_ e: Checkpoint.Entry, src: Checkpoint, writer: CheckpointWriter, outIndex: [Int]) throws -> JSONValue {
        let shape = e.info.shapeInts, (m, n) = (shape[0], shape[1])
        let a = Matrix(rows: m, cols: n, data: decodeFloats(src, e))
        let normSq = a.data.reduce(0.0) { $0 + Double($1) * Double($1) }
        guard normSq.isFinite else {   // Σ w² of finite f32 values cannot overflow an f64
            throw FormatError(file: src.filePath(of: e), tensor: e.name, "NaN or infinite values, which no SVD can factor")
        }
        let opts = svd.options(rank: policy.fixedRank, rows: m, cols: n, stream: e.name)
        let how = opts.method
        let t: TruncatedSVD, k: Int, why: String
        if let r = policy.fixedRank {
            t = try TruncatedSVD(a, rank: r, options: opts)
            (k, why) = (t.rank, "rank \(r)")
        } else {
            let full = try TruncatedSVD(a, rank: min(m, n), options: opts)
            (k, why) = policy.choose(full.s, total: normSq)
            t = TruncatedSVD(u: full.u, s: full.s, vt: full.vt, keep: k)
        }
        let approx = t.reconstruct()
        var errSq = 0.0
        for i in 0..<approx.data.count { let d = Double(a.data[i]) - Double(approx.data[i]); errSq += d * d }
        let size = e.info.dtype.size!
        func write(_ values: [Float], _ index: Int) throws { try writer.write(floats: values, as: e.info.dtype, tensor: index) }
        if outIndex.count == 2 {
            var left = t.u
            for i in 0..<m { for j in 0..<k { left[i, j] *= t.s[j] } }
            try write(left.data, outIndex[0])
            try write(t.vt.data, outIndex[1])
        } else {
            try write(approx.data, outIndex[0])
        }
        src.release(e)
        let kept = t.s.reduce(0.0) { $0 + Double($1) * Double($1) }
        var row: [(String, JSONValue)] = [("name", .string(e.name)), ("target", .bool(true)), ("shape", .array(shape.map { .int($0) })),
                                          ("rank", .int(k)), ("why", .string(why)), ("svd", .string(how.rawValue))]
        row += SVDChoice.measured(t)
        row += metric("energy_kept", normSq > 0 ? kept / normSq : 1)
        row += metric("relative_error", normSq > 0 ? (errSq / normSq).squareRoot() : 0)
        row += metric("sigma_ratio", k > 0 && t.s[k - 1] > 0 ? Double(t.s[0] / t.s[k - 1]) : .nan)
        row += [("bytes_before", .int(m * n * size)), ("bytes_after", .int(outIndex.count == 2 ? (m + n) * k * size : m * n * size))]
        return .object(row)
    }
}
