import SafeTensors

/// `wtool convert`: re-lays a checkpoint (file <-> folder, re-shard) and optionally changes the
/// floating-point dtype. Integer and BOOL tensors, and tensors not selected, are copied bit for bit.
public struct ConvertJob: Sendable {
    public var settings = JobSettings()
    public var input: String
    public var output: String
    public var dtype: DType?
    /// Validate and plan only: the report describes what would be written; nothing is.
    public var dryRun = false

    public init(input: String, output: String) { self.input = input; self.output = output }

    /// Plans (all validation happens here), converts, writes, reports.
    @discardableResult
    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        // ---- plan
        if let dtype, !dtype.isFloatingPoint { throw UsageError("--dtype must be a floating-point type, not \(dtype.rawValue)") }
        if GGUFFile.isGGUF(input) { return try GGUFImportJob(convert: self).run() }
        let source = try Checkpoint(path: input)
        report.warnings += source.warnings
        let plan = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: [source], part: settings.part)
        report.warnings += settings.selection.unusedPatterns(in: source.tensorNames).map { "pattern '\($0)' matches no tensor" }
        let entries = source.entries
        let outputs: [OutputTensor] = entries.map { e in
            OutputTensor(name: e.name, dtype: targetDType(e), shape: e.info.shape)
        }
        timer.lap("plan")
        report.inputs = [RunReport.describe(source)]
        report.parameters = [("dtype", dtype.map { .string($0.rawValue) } ?? .null),
                             ("shard_size", settings.shardSize.map { .uint($0) } ?? .null),
                             ("include", .array(settings.selection.include.map { .string($0) })),
                             ("exclude", .array(settings.selection.exclude.map { .string($0) })),
                             ("dry_run", .bool(dryRun))]
        if dryRun {
            let files = CheckpointWriter.plannedFiles(layout: plan.finalLayout, tensors: outputs)
            report.output = .object([("path", .string(output)), ("files", .array(files.map { .string($0.path) }))])
            report.tensors = zip(entries, outputs).map { e, o in
                .object([("name", .string(e.name)), ("shape", .array(e.info.shape.map { .uint($0) })),
                         ("dtype_in", .string(e.info.dtype.rawValue)), ("dtype_out", .string(o.dtype.rawValue)),
                         ("bytes_in", .int(e.info.byteCount)), ("bytes_out", .int(o.byteCount))])
            }
            report.summary = summary(entries, outputs, source, shards: files.count)
            report.timing = timer.phases
            return report
        }
        // ---- compute and write
        let writer = try plan.writer(tensors: outputs)
        let progress = Progress(total: entries.count, label: "convert", quiet: settings.quiet)
        let rows: [JSONValue]
        do {
            rows = try Engine.map(count: entries.count, threads: settings.threads, progress: progress) { i in
                guard writer.owns(i) else { return .object([("name", .string(entries[i].name)), ("part", .string("another"))]) }
                return try ConvertJob.convertTensor(source, entries[i], to: outputs[i].dtype, writer: writer, index: i)
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        let copied = try plan.copyAuxiliaryFiles(from: source, weights: outputs)
        timer.lap("convert")
        // ---- report
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        report.tensors = rows
        report.summary = summary(entries, outputs, source, shards: writer.shards.count)
        report.timing = timer.phases
        try plan.finish(report, reportPath: settings.reportPath)
        return report
    }

    private func summary(_ entries: [Checkpoint.Entry], _ outputs: [OutputTensor], _ source: Checkpoint,
                         shards: Int) -> [(String, JSONValue)] {
        let changed = zip(entries, outputs).filter { $0.info.dtype != $1.dtype }.count
        return [("tensors", .int(entries.count)), ("converted", .int(changed)),
                ("bytes_in", .uint(source.totalBytes)), ("bytes_out", .int(outputs.reduce(0) { $0 + $1.byteCount })),
                ("shards", .int(shards))]
    }

    private func targetDType(_ e: Checkpoint.Entry) -> DType {
        guard let dtype, e.info.dtype.isFloatingPoint, settings.selection.selects(e.name) else { return e.info.dtype }
        return dtype
    }

    /// Streams one tensor through f32 in blocks, measuring the rounding error the conversion costs.
    static func convertTensor(_ source: Checkpoint, _ e: Checkpoint.Entry, to dtype: DType,
                              writer: CheckpointWriter, index: Int) throws -> JSONValue {
        source.willNeed(e)
        let src = source.bytes(e)
        var row: [(String, JSONValue)] = [
            ("name", .string(e.name)), ("shape", .array(e.info.shape.map { .uint($0) })),
            ("dtype_in", .string(e.info.dtype.rawValue)), ("dtype_out", .string(dtype.rawValue)),
            ("bytes_in", .int(e.info.byteCount)),
        ]
        if dtype == e.info.dtype {
            // Bit-for-bit copy straight from the mapping, in 64 MiB pieces.
            var off = 0
            while off < src.count {
                let n = min(64 << 20, src.count - off)
                try writer.write(tensor: index, at: off, UnsafeRawBufferPointer(rebasing: src[off..<(off + n)]))
                off += n
            }
        } else {
            let count = e.info.count
            let block = 1 << 18
            let inSize = e.info.dtype.size!, outSize = dtype.size!
            // Widening between float formats is exact; anything else is measured. The error is
            // taken in f64 against the decoded source (f32 holds every source value exactly,
            // except F64 sources, which are re-read in f64).
            let lossy = dtype.bits <= e.info.dtype.bits
            let wide = e.info.dtype == .F64
            var err = ErrorAccumulator()
            // Converted in cache-sized pieces (every pass stays in L1/L2), written in large ones.
            let piece = 8192
            let f = UnsafeMutablePointer<Float>.allocate(capacity: piece)
            let back = UnsafeMutablePointer<Float>.allocate(capacity: piece)
            let out = UnsafeMutableRawPointer.allocate(byteCount: block * outSize, alignment: 64)
            let a = UnsafeMutablePointer<Double>.allocate(capacity: lossy && wide ? piece : 0)
            let b = UnsafeMutablePointer<Double>.allocate(capacity: lossy && wide ? piece : 0)
            defer { f.deallocate(); back.deallocate(); out.deallocate(); a.deallocate(); b.deallocate() }
            var i = 0
            while i < count {
                let n = min(block, count - i)
                var j = 0
                while j < n {
                    let m = min(piece, n - j)
                    let from = src.baseAddress! + (i + j) * inSize
                    let to = out + j * outSize
                    Codec.decode(e.info.dtype, from, count: m, into: f)
                    Codec.encode(f, count: m, as: dtype, into: to)
                    if lossy && wide {
                        Codec.decode(.F64, from, count: m, into: a)
                        Codec.decode(dtype, to, count: m, into: b)
                        for k in 0..<m { err.add(a[k], b[k]) }
                    } else if lossy {
                        Codec.decode(dtype, to, count: m, into: back)
                        err.add(f, back, count: m)
                    }
                    j += m
                }
                try writer.write(tensor: index, at: i * outSize, UnsafeRawBufferPointer(start: out, count: n * outSize))
                i += n
            }
            if lossy {
                row += metric("max_abs_error", err.maxAbs)
                row += metric("relative_error", err.relative)
            }
        }
        source.release(e)
        return .object(row)
    }
}

/// A mistake in how the command was called (exit status 2), as opposed to a bad input file (1).
public struct UsageError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ message: String) { description = message }
}
