import SafeTensors
import Linalg

/// `lowrank-svd pissa`: PiSSA initialisation (Meng et al.; PEFT's `pissa_init`): each target
/// W = U S Vᵀ gives A = diag(√S_r) V_rᵀ [r, in] and B = U_r diag(√S_r) [out, r] (scale 1); the model
/// written is the residual W - B A, and `<OUT>/pissa_adapter` the adapter, so that residual plus
/// adapter is the original model and training starts from the principal components.
public struct PiSSAJob: Sendable {
    public var input: String
    public var output: String
    public var rank = 16
    public var svd = SVDChoice()
    public var settings = JobSettings()

    public static let adapterFolder = "pissa_adapter"

    public init(input: String, output: String) { self.input = input; self.output = output }

    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        guard !output.hasSuffix(".safetensors") else { throw UsageError("pissa writes a folder (the residual model and \(PiSSAJob.adapterFolder)/): give a folder as -o") }
        let src = try Checkpoint(path: input)
        if settings.part != nil { throw UsageError("--part is not supported by lowrank-svd pissa (it writes an adapter beside the residual model)") }
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: [src])
        let targets = Set(LowRankTargets.select(src, settings.selection).map(\.name))
        let outputs = src.entries.map { OutputTensor(name: $0.name, dtype: $0.info.dtype, shape: $0.info.shape) }
        timer.lap("plan")
        let writer = try out.writer(tensors: outputs)
        let job = self
        let results: [([(String, DType, [Int], [Float])], (String, Int)?, JSONValue)]
        do {
            results = try Engine.map(count: src.entries.count, threads: settings.threads,
                                     progress: Progress(total: src.entries.count, label: "pissa", quiet: settings.quiet)) { i in
                let e = src.entries[i]
                guard targets.contains(e.name) else {
                    try writer.write(tensor: i, src.bytes(e))
                    src.release(e)
                    return ([], nil, .object([("name", .string(e.name)), ("target", .bool(false))]))
                }
                return try job.split(e, src: src, writer: writer, index: i)
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        _ = try out.copyAuxiliaryFiles(from: src)
        let ranks = results.compactMap(\.1)
        var config = PEFTAdapterConfig()
        config.r = max(1, ranks.map(\.1).max() ?? 1)
        config.loraAlpha = Double(config.r)
        config.rankPattern = ranks.filter { $0.1 != config.r }
        config.alphaPattern = config.rankPattern.map { ($0.0, Double($0.1)) }
        config.targetModules = .list(uniqued(ranks.map { String($0.0.split(separator: ".").last!) }).sorted())
        config.baseModel = output
        let adapterDir = FileSystem.join(output, PiSSAJob.adapterFolder)
        try ExtractLoRAJob.writeAdapter(FileSystem.join(try out.folder()!, PiSSAJob.adapterFolder), config: config,
                                        tensors: results.flatMap(\.0), provenance: settings.provenance)
        timer.lap("pissa")
        report.inputs = [RunReport.describe(src)]
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("adapter", .string(adapterDir))])
        report.parameters = [("rank", .int(rank))] + svd.parameters
        report.tensors = results.map(\.2)
        report.summary = [("lora_modules", .int(ranks.count)), ("rank", .int(config.r))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }

    func split(_ e: Checkpoint.Entry, src: Checkpoint, writer: CheckpointWriter, index: Int) throws
        -> ([(String, DType, [Int], [Float])], (String, Int)?, JSONValue) {
        let (m, n) = (e.info.shapeInts[0], e.info.shapeInts[1])
        let w = Matrix(rows: m, cols: n, data: decodeFloats(src, e))
        let opts = svd.options(rank: rank, rows: m, cols: n, stream: e.name)
        let t = try TruncatedSVD(w, rank: rank, options: opts)
        let k = t.rank
        var bm = t.u, am = t.vt
        for j in 0..<k {
            let r = t.s[j].squareRoot()
            for i in 0..<m { bm[i, j] *= r }
            for c in 0..<n { am[j, c] *= r }
        }
        let principal = matmul(bm, am)
        let residual = (0..<w.data.count).map { w.data[$0] - principal.data[$0] }
        try writer.write(floats: residual, as: e.info.dtype, tensor: index)
        src.release(e)
        let module = String(e.name.dropLast(".weight".count))
        let p = PEFTAdapterConfig.prefix
        let normSq = w.data.reduce(0.0) { $0 + Double($1) * Double($1) }
        let kept = t.s.reduce(0.0) { $0 + Double($1) * Double($1) }
        var row: [(String, JSONValue)] = [("name", .string(e.name)), ("target", .bool(true)), ("rank", .int(k)), ("svd", .string(opts.method.rawValue))]
        row += SVDChoice.measured(t)
        row += metric("principal_energy", normSq > 0 ? kept / normSq : 0)
        return ([(p + module + ".lora_A.weight", e.info.dtype, [k, n], am.data), (p + module + ".lora_B.weight", e.info.dtype, [m, k], bm.data)],
                (module, k), .object(row))
    }
}
