import SafeTensors

/// `wtool convert model.gguf -o DIR`: a llama.cpp GGUF back into a Hugging Face model folder.
/// Every tensor is decoded (quantized blocks to their exact dequantized values), renamed, its
/// Q/K rows put back in Hugging Face's order, and written in one float dtype; config.json comes
/// from the hyper-parameters, tokenizer files from a byte-level BPE vocabulary.
struct GGUFImportJob {
    let convert: ConvertJob

    func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: convert.settings.command)
        let settings = convert.settings
        if !settings.selection.include.isEmpty || !settings.selection.exclude.isEmpty {
            throw UsageError("--include/--exclude do not apply to a GGUF import: every tensor is needed for a loadable model")
        }
        if let dtype = convert.dtype, ![.F32, .F16, .BF16].contains(dtype) {
            throw UsageError("--dtype for a GGUF import must be f32, f16 or bf16, not \(dtype.rawValue)")
        }
        let file = try GGUFFile(path: convert.input)
        let model = try GGUFModelImport(file)
        report.warnings += model.warnings
        let plan = try OutputPlan(path: convert.output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: [],
                                  inputFiles: [file.path], part: settings.part)
        guard case .folder = plan.finalLayout else {
            throw UsageError("a GGUF import writes a model folder (weights, config.json, tokenizer): give -o DIR, not a .safetensors file")
        }
        let dtype = convert.dtype ?? GGUFImportJob.defaultDType(model.tensors)
        let outputs = model.tensors.map { OutputTensor(name: $0.hfName, dtype: dtype, shape: $0.shape) }
        var tokenizerFiles: [(String, [UInt8])] = []
        do {
            if let t = try GGUFTokenizerImport(file, contextLength: model.config.first { $0.0 == "max_position_embeddings" }?.1.uint64Value.map { Int($0) }) {
                tokenizerFiles = t.files
            } else {
                report.warnings.append("\(file.path): no tokenizer in the GGUF; the folder has none")
            }
        } catch let e as FormatError {
            report.warnings.append("\(e.description); the folder has no tokenizer files")
        }
        timer.lap("plan")
        report.inputs = [.object([("path", .string(file.path)), ("format", .string("gguf")), ("architecture", .string(model.arch)),
                                  ("tensors", .int(file.tensors.count))])]
        report.parameters = [("dtype", .string(dtype.rawValue)), ("dtype_chosen", .string(convert.dtype == nil ? "default" : "--dtype")),
                             ("shard_size", settings.shardSize.map { .uint($0) } ?? .null), ("dry_run", .bool(convert.dryRun))]
        if convert.dryRun {
            let files = CheckpointWriter.plannedFiles(layout: plan.finalLayout, tensors: outputs)
            report.output = .object([("path", .string(convert.output)),
                                     ("files", .array((files.map(\.path) + ["config.json"] + tokenizerFiles.map(\.0)).map { .string($0) }))])
            report.tensors = zip(model.tensors, outputs).map { GGUFImportJob.row($0, $1) }
            report.summary = GGUFImportJob.summary(model, outputs, shards: files.count, tokenizer: !tokenizerFiles.isEmpty)
            report.timing = timer.phases
            return report
        }
        let writer = try plan.writer(tensors: outputs)
        let progress = Progress(total: outputs.count, label: "convert", quiet: settings.quiet)
        do {
            report.tensors = try Engine.map(count: outputs.count, threads: settings.threads, progress: progress) { i in
                guard writer.owns(i) else { return .object([("name", .string(outputs[i].name)), ("part", .string("another"))]) }
                try GGUFImportJob.decode(file, model.tensors[i], as: dtype, writer: writer, index: i)
                return GGUFImportJob.row(model.tensors[i], outputs[i])
            }
            try writer.commit()
            guard let folder = try plan.folder() else { throw UsageError("a GGUF import needs a folder output") }
            var config = model.config
            config.append(("torch_dtype", .string(ModelConfig.torchNames[dtype] ?? "float32")))
            try AtomicFile.write(Array((JSONValue.object(config).pretty(indent: 2, sortKeys: true) + "\n").utf8), to: FileSystem.join(folder, "config.json"))
            for (name, bytes) in tokenizerFiles { try AtomicFile.write(bytes, to: FileSystem.join(folder, name)) }
        } catch {
            writer.abort()
            throw error
        }
        timer.lap("convert")
        report.output = .object([("path", .string(convert.output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("written", .array((["config.json"] + tokenizerFiles.map(\.0)).map { .string($0) }))])
        report.summary = GGUFImportJob.summary(model, outputs, shards: writer.shards.count, tokenizer: !tokenizerFiles.isEmpty)
        report.timing = timer.phases
        try plan.finish(report, reportPath: settings.reportPath)
        return report
    }

    /// The 2-D tensors' type when they all have one float type (F16 stays F16...); F32 when any is
    /// quantized or they differ: the dequantized values exactly.
    static func defaultDType(_ tensors: [GGUFModelImport.Tensor]) -> DType {
        let types = Set(tensors.filter { $0.shape.count >= 2 }.map(\.type))
        if types.count == 1, let d = types.first?.plainDType { return d }
        return .F32
    }

    static func summary(_ model: GGUFModelImport, _ outputs: [OutputTensor], shards: Int, tokenizer: Bool) -> [(String, JSONValue)] {
        [("tensors", .int(outputs.count)), ("converted", .int(outputs.count)),
         ("dequantized", .int(model.tensors.filter { $0.type.isQuantized }.count)),
         ("unpermuted", .int(model.tensors.filter { $0.unpermuteHeads != nil }.count)),
         ("bytes_out", .int(outputs.reduce(0) { $0 + $1.byteCount })), ("shards", .int(shards)), ("tokenizer", .bool(tokenizer))]
    }

    static func row(_ t: GGUFModelImport.Tensor, _ o: OutputTensor) -> JSONValue {
        .object([("name", .string(o.name)), ("gguf_name", .string(t.gguf.name)), ("dtype_in", .string(t.type.name)),
                 ("shape", .array(o.shape.map { .uint($0) })), ("dtype_out", .string(o.dtype.rawValue)), ("bytes_out", .int(o.byteCount)),
                 ("unpermuted", .bool(t.unpermuteHeads != nil))])
    }

    /// Decodes a tensor row block by row block (whole, for the permuted Q/K) and writes it.
    static func decode(_ file: GGUFFile, _ t: GGUFModelImport.Tensor, as dtype: DType, writer: CheckpointWriter, index: Int) throws {
        let rowLength = Int(t.gguf.dims.first ?? 1), rows = t.gguf.count / max(1, rowLength)
        let rowBytes = t.type.rowBytes(rowLength)
        let src = try file.bytes(t.gguf, byteCount: rows * rowBytes)
        let outSize = dtype.size!
        let blockRows = t.unpermuteHeads != nil ? rows : max(1, (1 << 18) / max(1, rowLength))
        let values = UnsafeMutablePointer<Float>.allocate(capacity: blockRows * rowLength)
        let order = UnsafeMutablePointer<Float>.allocate(capacity: t.unpermuteHeads != nil ? rows * rowLength : 0)
        let out = UnsafeMutableRawPointer.allocate(byteCount: blockRows * rowLength * outSize, alignment: 64)
        defer { values.deallocate(); order.deallocate(); out.deallocate() }
        var r = 0
        while r < rows {
            let n = min(blockRows, rows - r)
            t.type.decode(src.baseAddress! + r * rowBytes, count: n * rowLength, into: values)
            var result = UnsafePointer(values)
            if let heads = t.unpermuteHeads {
                GGUFImportJob.unpermuteRows(values, rows: rows, cols: rowLength, heads: heads, into: order)
                result = UnsafePointer(order)
            }
            Codec.encode(result, count: n * rowLength, as: dtype, into: out)
            try writer.write(tensor: index, at: r * rowLength * outSize, UnsafeRawBufferPointer(start: out, count: n * rowLength * outSize))
            r += n
        }
    }

    /// The inverse of `LlamaCppExport.permuteRows`: row h·hd + j·hd/2 + i of the result is row
    /// h·hd + 2i + j of the GGUF tensor.
    static func unpermuteRows(_ x: UnsafePointer<Float>, rows: Int, cols: Int, heads: Int, into out: UnsafeMutablePointer<Float>) {
        let hd = rows / heads, half = hd / 2
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    (out + (h * hd + j * half + i) * cols).update(from: x + (h * hd + i * 2 + j) * cols, count: cols)
                }
            }
        }
    }
}
