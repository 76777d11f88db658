import SafeTensors

/// `task-vector extract`: FT - BASE for every float tensor, as a checkpoint (f32 by default: a
/// bf16 delta of bf16 weights is not exact), with the base recorded (path and a CRC-32 of each base
/// tensor) so `apply` can tell when it is given another base. Optional TIES trim (`density`).
public struct ExtractTaskVectorJob: Sendable {
    public var settings = JobSettings()
    public var base: String
    public var finetuned: String
    public var output: String
    public var dtype: DType = .F32
    public var density: Double?

    public init(base: String, finetuned: String, output: String) { self.base = base; self.finetuned = finetuned; self.output = output }


    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let dtype = self.dtype
        guard dtype.isFloatingPoint else { throw UsageError("--dtype must be a float type") }
        if let d = density, !(d > 0 && d <= 1) { throw UsageError("--density must be in (0, 1]") }
        let b = try Checkpoint(path: base), ft = try Checkpoint(path: finetuned)
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: [b, ft], part: settings.part)
        report.warnings = b.warnings + ft.warnings
        var floatNames: [String] = [], skipped: [String] = []
        for e in ft.entries where settings.selection.selects(e.name) {
            guard let be = b.entry(e.name) else {
                throw FormatError(file: ft.filePath(of: e), tensor: e.name, "not in the base \(base)")
            }
            guard be.info.shape == e.info.shape else {
                throw FormatError(file: ft.filePath(of: e), tensor: e.name, "shape \(e.info.shape) differs from the base's \(be.info.shape)")
            }
            if e.info.dtype.isFloatingPoint && be.info.dtype.isFloatingPoint { floatNames.append(e.name) } else { skipped.append(e.name) }
        }
        let names = floatNames
        let notInFT = b.tensorNames.filter { ft.entry($0) == nil && settings.selection.selects($0) }
        let outputs = names.map { OutputTensor(name: $0, dtype: dtype, shape: ft.entry($0)!.info.shape) }
        // Identify the base: CRC-32 of every base tensor's bytes (computed in parallel).
        let sums = try Engine.map(count: names.count, threads: settings.threads) { i -> String in
            let e = b.entry(names[i])!
            defer { b.release(e) }
            return checksum(b.bytes(e))
        }
        var meta = out.metadata
        meta[TaskVectorMetadata.kind] = TaskVectorMetadata.kindValue
        meta[TaskVectorMetadata.base] = base
        meta[TaskVectorMetadata.baseChecksums] = JSONValue.object(zip(names, sums).map { ($0, .string($1)) }).compact()
        timer.lap("plan")
        let writer = try out.writer(tensors: outputs, metadata: meta)
        let density = self.density
        let rows: [JSONValue]
        do {
            rows = try Engine.map(count: names.count, threads: settings.threads, progress: Progress(total: names.count, label: "extract", quiet: settings.quiet)) { i in
                let name = names[i]
                guard writer.owns(i) else { return .object([("name", .string(name)), ("part", .string("another"))]) }
                let bv = decodeDoubles(b, b.entry(name)!), fv = decodeDoubles(ft, ft.entry(name)!)
                // The f64 difference (exact for f32 and narrower inputs), stored rounded to the
                // target dtype: F64 storage rebuilds any fine-tune exactly, f32 storage every
                // 16-bit one.
                var exact = [Double](unsafeUninitializedCapacity: bv.count) { buf, done in
                    for k in 0..<bv.count { buf[k] = fv[k] - bv[k] }
                    done = bv.count
                }
                var row: [(String, JSONValue)] = [("name", .string(name)), ("shape", .array(outputs[i].shape.map { .uint($0) }))]
                if let density {
                    let full = exact
                    let keep = Sparsifier.topK(exact.map { Float($0) }, Int(density * Double(exact.count)))
                    for k in exact.indices where !keep[k] { exact[k] = 0 }
                    let fn = full.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    let err = zip(full, exact).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
                    row += metric("trim_relative_error", fn > 0 ? err / fn : 0)
                }
                // Stored values, as apply will read them, and how exactly they rebuild the fine-tune.
                let enc = UnsafeMutableRawPointer.allocate(byteCount: max(1, outputs[i].byteCount), alignment: 64)
                defer { enc.deallocate() }
                if dtype == .F64 {
                    exact.withUnsafeBytes { enc.copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(enc), byteCount: $0.count) }
                } else {
                    exact.map { Float($0) }.withUnsafeBufferPointer { Codec.encode($0.baseAddress!, count: $0.count, as: dtype, into: enc) }
                }
                try writer.write(tensor: i, UnsafeRawBufferPointer(start: enc, count: outputs[i].byteCount))
                var stored = [Double](repeating: 0, count: exact.count)
                stored.withUnsafeMutableBufferPointer { Codec.decode(dtype, enc, count: $0.count, into: $0.baseAddress!) }
                if density == nil {
                    var same = 0
                    for k in 0..<bv.count where Float(bv[k] + stored[k]) == Float(fv[k]) { same += 1 }
                    row.append(("roundtrip_exact_fraction", .double(bv.isEmpty ? 1 : Double(same) / Double(bv.count))))
                }
                let n = stored.reduce(0) { $0 + $1 * $1 }.squareRoot(), bn = bv.reduce(0) { $0 + $1 * $1 }.squareRoot()
                row += metric("norm", n) + metric("base_norm", bn) + metric("relative_change", bn > 0 ? n / bn : .nan)
                row += metric("max_abs", stored.map(abs).max() ?? 0)
                row.append(("zero_fraction", .double(stored.isEmpty ? 0 : Double(stored.filter { $0 == 0 }.count) / Double(stored.count))))
                return .object(row)
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        timer.lap("extract")
        report.inputs = [RunReport.describe(b), RunReport.describe(ft)]
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) }))])
        report.parameters = [("dtype", .string(dtype.rawValue)), ("density", density.map { .double($0) } ?? .null)]
        report.tensors = rows
        report.summary = [("tensors", .int(rows.count)), ("skipped_not_float", .array(skipped.map { .string($0) })),
                          ("only_in_base", .array(notInFT.map { .string($0) })),
                          ("bytes_out", .int(outputs.reduce(0) { $0 + $1.byteCount }))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }
}
