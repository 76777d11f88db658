import CQuant
import SafeTensors

/// `wtool quantize`: data-free quantization of a checkpoint into GGUF (llama.cpp),
/// compressed-tensors (vLLM) or fake-quantized safetensors, streamed tensor by tensor, with the
/// measured error of every tensor in the report.
public struct QuantizeJob: Sendable {
    public var settings = JobSettings()
    public var input: String
    public var output: String
    public var scheme: QuantScheme
    public var format: QuantFormat
    /// nil: the scheme's default (block / group of `groupSize` / tensor / channel).
    public var granularity: Granularity?
    /// Elements per group for group granularity (nil: 128); refused for any other granularity.
    public var groupSize: Int?
    /// nil: symmetric for RTN integers.
    public var symmetric: Bool?
    /// GGUF for llama.cpp: its tensor names, hyper-parameters and Q/K row order (LLaMA family).
    public var llamaCpp = false
    /// With llamaCpp: the folder's tokenizer into the GGUF (true), or none (token ids only).
    public var withTokenizer = true
    /// A llama.cpp importance matrix (GGUF or legacy .dat) weighting the block searches.
    public var imatrixPath: String?

    public init(input: String, output: String, scheme: QuantScheme, format: QuantFormat) {
        self.input = input; self.output = output; self.scheme = scheme; self.format = format
    }

    /// One input tensor's fate.
    struct Task: Sendable {
        let entry: Checkpoint.Entry
        let rows: Int, cols: Int
        /// Elements per scale when quantized; nil when kept.
        let run: Int?
        let keptReason: String?
        /// First output index and how many outputs.
        let firstOutput: Int
        let outputCount: Int
        let outputName: String
        let permuteHeads: Int?
        /// GGUF type of a kept tensor.
        let ggufPlain: UInt32?
        /// The block type a quantized tensor gets (a ggml scheme's, or the mix's choice) and why.
        var blockType: GGMLType? = nil
        var rule: String? = nil
        /// The importance matrix's column weights for this tensor.
        var importance: [Float]? = nil
    }

    @discardableResult
    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        // ---- validate the recipe
        guard scheme.formats.contains(format) else {
            throw UsageError("scheme \(scheme.name) cannot be written as \(format.rawValue) (it can be: \(scheme.formats.map(\.rawValue).joined(separator: ", ")))")
        }
        if granularity != nil && !scheme.allowsGranularity {
            throw UsageError("--granularity does not apply to \(scheme.name) (its blocks/scale are fixed by the format)")
        }
        if case .fp8 = scheme, case .group? = granularity { throw UsageError("fp8 takes --granularity tensor or channel") }
        guard (groupSize ?? 1) >= 1 else { throw UsageError("--group-size must be at least 1") }
        if symmetric != nil { if case .integer = scheme {} else { throw UsageError("--symmetric/--asymmetric apply to the int2...int8 schemes only") } }
        // With --llama-cpp a llama-quantize file type name (q4_k_m, and q8_0, q2_k, q4_k...) chooses
        // every tensor's type by llama.cpp's rules, token_embd and output included, as llama-quantize does.
        var scheme = self.scheme
        if llamaCpp, case let .ggml(t) = scheme, let m = QuantMix(t.name) { scheme = .mix(m) }
        let mix: QuantMix? = { if case let .mix(m) = scheme { return m }; return nil }()
        if imatrixPath != nil && scheme.blockType.map({ !$0.isQuantized }) ?? true {
            throw UsageError("--imatrix applies to the llama.cpp block schemes and mixes")
        }
        if mix != nil && !llamaCpp { throw UsageError("\(scheme.name) is a llama-quantize mix: it needs --llama-cpp (for the layer rules and llama.cpp's names)") }
        if llamaCpp && format != .gguf && !(format == .fake && mix != nil) {
            throw UsageError("--llama-cpp applies to --format gguf (and to --format fake with a llama-quantize mix)")
        }
        let gran = granularity ?? scheme.defaultGranularity(groupSize: groupSize ?? 128)
        if groupSize != nil, !gran.isGroup || !scheme.allowsGranularity {
            let uses = scheme.allowsGranularity ? "uses \(gran) scales here" : "has blocks fixed by its format"
            throw UsageError("--group-size applies to group granularity (int and hqq schemes); \(scheme.name) \(uses)")
        }
        let quantizer = TensorQuantizer(scheme: scheme, format: format, granularity: gran, symmetric: symmetric ?? true)
        let imatrix = try imatrixPath.map { try ImportanceMatrix(path: $0) }   // after every usage check

        let source = try Checkpoint(path: input)
        report.warnings += source.warnings
        report.warnings += settings.selection.unusedPatterns(in: source.tensorNames).map { "pattern '\($0)' matches no tensor" }
        let configPath = source.folder.map { FileSystem.join($0, "config.json") }
        let hasConfig = configPath.map { FileSystem.kind($0) == .file } ?? false
        if !withTokenizer && !llamaCpp { throw UsageError("--tokenizer applies to --llama-cpp") }
        let llama: LlamaCppExport? = llamaCpp ? try {
            guard hasConfig, let configPath else { throw FormatError(file: input, "--llama-cpp needs a model folder with config.json") }
            return try LlamaCppExport(config: try ModelConfig(path: configPath))
        }() : nil
        let vocabulary: GGUFTokenizer? = try llama.flatMap { l in
            guard withTokenizer, format == .gguf, let folder = source.folder, let configPath else { return nil }
            return try GGUFTokenizer(folder: folder, arch: l.arch, config: try JSONParser.parse(try FileSystem.readAll(configPath)),
                                     vocabularySize: l.vocabularySize)
        }
        if let vocabulary, let embedding = source.entries.first(where: { $0.name == "model.embed_tokens.weight" }),
           let rows = embedding.info.shape.first, rows != UInt64(vocabulary.tokenCount) {
            throw FormatError(file: source.filePath(of: embedding), tensor: embedding.name,
                              "has \(rows) rows but the tokenizer \(vocabulary.tokenCount) tokens; llama.cpp needs one row per token")
        }
        let floatScheme: Bool = { if case let .ggml(t) = scheme { return !t.isQuantized }; return false }()

        // ---- plan every tensor
        // A float GGUF (f32/f16/bf16) converts every matrix, embeddings and head included, as convert_hf_to_gguf does.
        let targets = QuantizeTargets(selection: settings.selection, allMatrices: floatScheme)
        var tasks: [Task] = []
        var stOutputs: [OutputTensor] = []
        var ggufOutputs: [GGUFTensorInfo] = []
        let mixModel = llama.map { QuantMix.Model(layers: $0.layers, heads: $0.heads, kvHeads: $0.kvHeads,
                                                  tiedEmbeddings: !source.entries.contains { $0.name == "lm_head.weight" }, arch: $0.arch,
                                                  hasImatrix: imatrix != nil) }
        for e in source.entries {
            let shape = e.info.shape.map { Int($0) }
            let cols = shape.last ?? 1, rows = cols == 0 ? 0 : e.info.count / max(cols, 1)
            var run: Int? = nil, reason: String? = nil
            var blockType: GGMLType? = nil, rule: String? = nil
            if let mix, let mixModel, let llama {
                let ggufName = llama.name(forHF: e.name) ?? e.name
                if !settings.selection.selects(e.name) { reason = "excluded" }
                else if !e.info.dtype.isFloatingPoint || !QuantMix.allowsQuantization(ggufName, dimensions: shape.count) {
                    reason = "llama-quantize keeps it (\(shape.count < 2 ? "not a matrix" : "norm, router or not a weight"))"
                } else if rows * cols > 0 {
                    let choice = mix.type(for: ggufName, rowLength: cols, model: mixModel)
                    guard let t = choice.type else { throw FormatError(file: source.filePath(of: e), tensor: e.name, choice.rule) }
                    blockType = t; rule = choice.rule; run = t.blockSize
                }
            } else if targets.picks(e.name, shape: e.info.shape) {
                if !e.info.dtype.isFloatingPoint { reason = "\(e.info.dtype.rawValue) is not a float type" }
                else if shape.count < 2 { reason = "not a matrix" }
                else if format == .compressedTensors && (shape.count != 2 || !e.name.hasSuffix(".weight")) {
                    reason = "compressed-tensors quantizes 2-D '<module>.weight' tensors only"
                } else if let r = gran.runLength(rows: rows, cols: cols), rows * cols > 0 {
                    run = r
                } else {
                    let g: Int
                    if case let .group(s) = gran { g = s } else { g = 1 }
                    reason = "input dimension \(cols) is not a multiple of the \(scheme.name) block/group size \(g)"
                }
            }
            if run != nil, blockType == nil, let t = scheme.blockType { blockType = t }
            var name = e.name, permute: Int? = nil
            if let llama, format == .gguf {
                if e.name.hasSuffix("rotary_emb.inv_freq") { continue }  // llama.cpp computes it
                guard let mapped = llama.name(forHF: e.name) else {
                    throw FormatError(file: source.filePath(of: e), tensor: e.name, "has no llama.cpp name (--llama-cpp maps the LLaMA family's tensors)")
                }
                name = mapped
                permute = llama.permutedHeads(forHF: e.name)
                if let h = permute, shape.count >= 1, shape[0] % (2 * h) != 0 {
                    throw FormatError(file: source.filePath(of: e), tensor: e.name, "\(shape[0]) rows do not split into \(h) heads of even size")
                }
            }
            var plain: UInt32? = nil
            let first = format == .gguf ? ggufOutputs.count : stOutputs.count
            switch format {
            case .gguf:
                let type: UInt32, bytes: Int
                if run != nil, let t = blockType {
                    type = t.id; bytes = t.rowBytes(e.info.count)
                } else if llama != nil && e.info.dtype.isFloatingPoint && (shape.count <= 1 || name.hasSuffix("_norm.weight") || !name.hasSuffix(".weight")) {
                    type = 0; bytes = e.info.count * 4; plain = 0   // convert keeps norms, biases and vectors in F32
                } else {
                    guard let (id, size) = QuantizeJob.ggufPlainType(e.info.dtype) else {
                        throw FormatError(file: source.filePath(of: e), tensor: e.name, "dtype \(e.info.dtype.rawValue) has no GGUF type")
                    }
                    type = id; bytes = e.info.count * size; plain = id
                }
                ggufOutputs.append(GGUFTensorInfo(name: name, shape: e.info.shape, type: type, byteCount: bytes))
            case .compressedTensors where run != nil:
                let prefix = String(e.name.dropLast("weight".count))
                for o in quantizer.outputs(rows: rows, cols: cols, run: run!, weightDType: e.info.dtype) {
                    stOutputs.append(OutputTensor(name: prefix + o.suffix, dtype: o.dtype, shape: o.shape))
                }
            case .compressedTensors, .fake:
                stOutputs.append(OutputTensor(name: e.name, dtype: e.info.dtype, shape: e.info.shape))
            }
            let count = (format == .gguf ? ggufOutputs.count : stOutputs.count) - first
            let importance = try blockType.flatMap { t in try imatrix?.weights(for: GGUFNames.gguf(forHF: e.name) ?? e.name, columns: cols).flatMap { t.encodeWeighted == nil ? nil : $0 } }
            tasks.append(Task(entry: e, rows: rows, cols: cols, run: run, keptReason: reason, firstOutput: first,
                              outputCount: count, outputName: name, permuteHeads: permute, ggufPlain: plain, blockType: blockType, rule: rule,
                              importance: importance))
        }
        // llama3 RoPE scaling: the frequency divisors as one more F32 tensor, written after the others.
        var ropeFreqs: (index: Int, values: [Float])? = nil
        if format == .gguf, let f = llama?.ropeFrequencyFactors {
            ropeFreqs = (ggufOutputs.count, f)
            ggufOutputs.append(GGUFTensorInfo(name: "rope_freqs.weight", shape: [UInt64(f.count)], type: 0, byteCount: 4 * f.count))
        }
        let quantizedCount = tasks.filter { $0.run != nil }.count
        if quantizedCount == 0 { report.warnings.append("no tensor was quantized (see each tensor's kept_reason)") }
        if case .ternary = scheme { report.warnings.append("post-hoc ternarisation is very lossy on weights not trained ternary (BitNet b1.58 is a training recipe)") }
        if format == .compressedTensors, !quantizer.effectiveSymmetric, gran != .tensor, quantizedCount > 0 {
            report.warnings.append(QuantizeJob.asymmetricPackWarning)
        }
        if format == .compressedTensors, scheme.storedBits != 4 && scheme.storedBits != 8 {
            report.warnings.append("vLLM loads pack-quantized weights of 4 and 8 bits; \(scheme.storedBits)-bit packing follows compressed-tensors >= 0.12 (dense bit stream)")
        }
        timer.lap("plan")

        report.inputs = [RunReport.describe(source)]
        report.parameters = [
            ("scheme", .string(scheme.name)), ("format", .string(format.rawValue)),
            ("granularity", .string(gran.description)), ("symmetric", .bool(quantizer.effectiveSymmetric)),
            ("llama_cpp", .bool(llamaCpp)),
            ("imatrix", imatrix.map { .string($0.path) } ?? .null),
            ("tokenizer", llama == nil ? .null : .string(vocabulary.map { "\($0.model) (\($0.pre)), \($0.tokenCount) tokens" } ?? "none")),
            ("include", .array(settings.selection.include.map { .string($0) })),
            ("exclude", .array(settings.selection.exclude.map { .string($0) })),
        ]

        // ---- write
        let sink: QuantizeSink
        var plan: OutputPlan? = nil
        if format == .gguf {
            guard output.hasSuffix(".gguf") else { throw UsageError("--format gguf writes one file: give -o NAME.gguf") }
            if settings.part != nil { throw UsageError("--part splits the shards of a folder output; a GGUF is one file") }
            try QuantizeJob.refuseOverwriting(output, source)
            OutputTransaction.removeStaleTemporaries(in: FileSystem.dirname(output))
            let metadata = ggufMetadata(source: source, configPath: hasConfig ? configPath : nil, llama: llama, vocabulary: vocabulary,
                                        anyQuantized: quantizedCount > 0)
            sink = .gguf(try GGUFWriter(path: output, metadata: metadata, tensors: ggufOutputs))
        } else {
            guard !output.hasSuffix(".gguf") else { throw UsageError("-o \(output): a .gguf output needs --format gguf") }
            let p = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: [source], part: settings.part)
            plan = p
            var meta = p.metadata
            if format == .compressedTensors { meta["quantization_config"] = ctConfig(tasks, gran: gran).compact() }
            sink = .safetensors(try p.writer(tensors: stOutputs, metadata: meta))
        }
        let progress = Progress(total: tasks.count, label: "quantize", quiet: settings.quiet)
        let plannedTasks = tasks
        let rows: [TensorOutcome]
        do {
            rows = try Engine.map(count: tasks.count, threads: settings.threads, progress: progress) { i in
                let t = plannedTasks[i]
                guard sink.owns(t.firstOutput..<(t.firstOutput + t.outputCount)) else {
                    return TensorOutcome(row: .object([("name", .string(t.outputName)), ("part", .string("another"))]), error: nil, written: 0, stored: 0)
                }
                return try process(t, source: source, quantizer: quantizer, sink: sink)
            }
            if let ropeFreqs { try ropeFreqs.values.withUnsafeBytes { try sink.write(ropeFreqs.index, $0) } }
            try sink.commit()
        } catch {
            sink.abort()
            throw error
        }
        var copied: [String] = []
        if let plan {
            let quantization: JSONValue? = format == .compressedTensors ? ctConfig(tasks, gran: gran) : nil
            copied = try plan.copyAuxiliaryFiles(from: source, weights: format == .fake ? stOutputs : nil,
                                                 edit: { c in if let quantization { c.set("quantization_config", quantization) } })
            if format == .compressedTensors, case .folder = plan.finalLayout, !hasConfig {
                report.warnings.append("the input has no config.json: vLLM needs one with this quantization_config (kept in the safetensors metadata)")
            }
        }
        timer.lap("quantize")

        // ---- report
        var total = ErrorAccumulator()
        var bytesIn = 0, bytesOut = 0, qIn = 0, qOut = 0, qCount = 0
        var encodeSeconds = 0.0, kernelBytesIn = 0
        for (k, t) in tasks.enumerated() {
            bytesIn += t.entry.info.byteCount
            bytesOut += rows[k].written
            if let e = rows[k].error { total.merge(e); qIn += t.entry.info.byteCount; qOut += rows[k].stored; qCount += t.entry.info.count }
            if let s = rows[k].encodeSeconds { encodeSeconds += s; kernelBytesIn += t.entry.info.count * 4 }
        }
        report.tensors = rows.map(\.row)
        let files: [String]
        switch sink {
        case .gguf: files = [output]
        case let .safetensors(w): files = w.shards.map(\.displayPath)
        }
        report.output = .object([("path", .string(output)), ("files", .array(files.map { .string($0) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        let seconds = timer.phases.last.flatMap { $0.1.doubleValue } ?? 0
        var summary: [(String, JSONValue)] = [
            ("tensors", .int(tasks.count)), ("quantized", .int(quantizedCount)), ("kept", .int(tasks.count - quantizedCount)),
            ("bytes_in", .int(bytesIn)), ("bytes_out", .int(bytesOut)),
            ("quantized_bytes_in", .int(qIn)), ("quantized_bytes_stored", .int(qOut)),
        ]
        if format == .gguf {
            // The whole file's tensor data per weight, as llama.cpp prints it ("model size ... BPW").
            let elements = ggufOutputs.reduce(0) { $0 + $1.shape.reduce(1) { $0 * Int($1) } }
            summary += metric("file_bits_per_weight", elements > 0 ? Double(ggufOutputs.reduce(0) { $0 + $1.byteCount } * 8) / Double(elements) : 0)
        }
        let bpw: Double = qCount > 0 ? Double(qOut * 8) / Double(qCount) : 0
        let throughput: Double = seconds > 0 ? Double(bytesIn) / seconds / 1e6 : 0
        summary += metric("bits_per_weight", bpw)
        summary += errorMetrics(total)
        summary += metric("throughput_mb_s", throughput)
        report.summary = summary
        report.timing = timer.phases
        if kernelBytesIn > 0 {
            // The quantizer kernels alone, summed over threads (f32 input per second of one core):
            // a block format's encoder, what `make bench` sets beside ggml's ggml_quantize_chunk on
            // the same rows; for RTN integers the codes, packing, decoding back and the error.
            report.timing += [("encode_thread_s", .double((encodeSeconds * 1e6).rounded() / 1e6))]
                + metric("encode_mb_s_per_thread", encodeSeconds > 0 ? Double(kernelBytesIn) / encodeSeconds / 1e6 : 0)
        }
        if let plan {
            try plan.finish(report, reportPath: settings.reportPath)
        } else {
            try report.write(to: settings.reportPath ?? String(output.dropLast(".gguf".count)) + ".report.json")
        }
        return report
    }

    /// What one tensor became: its report row, its error (quantized tensors), the bytes written and
    /// stored, and for the streamed kernels (block types, RTN) the seconds spent in them.
    struct TensorOutcome: Sendable {
        var row: JSONValue
        var error: ErrorAccumulator?
        var written: Int
        var stored: Int
        var encodeSeconds: Double? = nil
    }

    /// Quantizes (or copies) one tensor and writes its outputs.
    private func process(_ t: Task, source: Checkpoint, quantizer: TensorQuantizer, sink: QuantizeSink) throws -> TensorOutcome {
        let e = t.entry
        var row: [(String, JSONValue)] = [("name", .string(e.name)), ("shape", .array(e.info.shape.map { .uint($0) })),
                                          ("dtype_in", .string(e.info.dtype.rawValue)), ("bytes_in", .int(e.info.byteCount))]
        if t.outputName != e.name { row.append(("output_name", .string(t.outputName))) }
        guard let run = t.run else {
            // Kept: copied as is, or (GGUF) re-encoded into a plain GGUF type.
            var written = 0
            // F64 and F8 become F32 in GGUF; everything else goes out in its own bytes.
            let reencode = [.F64, .F8_E4M3, .F8_E5M2].contains(e.info.dtype) || t.permuteHeads != nil
                || t.ggufPlain.map { $0 != QuantizeJob.ggufPlainType(e.info.dtype)?.id } ?? false
            if let plain = t.ggufPlain, reencode {
                var x = decodeFloats(source, e)
                if let h = t.permuteHeads { x = LlamaCppExport.permuteRows(x, rows: t.rows, cols: t.cols, heads: h)! }
                let type = GGMLType.withID(plain)!
                var out = [UInt8](repeating: 0, count: type.rowBytes(x.count))
                x.withUnsafeBufferPointer { p in out.withUnsafeMutableBytes { type.encode(p.baseAddress!, count: x.count, into: $0.baseAddress!) } }
                try out.withUnsafeBytes { try sink.write(t.firstOutput, $0) }
                written = out.count
            } else {
                try sink.write(t.firstOutput, source.bytes(e))
                written = e.info.byteCount
            }
            source.release(e)
            row += [("quantized", .bool(false)), ("bytes_out", .int(written))]
            if let r = t.keptReason { row.append(("kept_reason", .string(r))) }
            return TensorOutcome(row: .object(row), error: nil, written: written, stored: written)
        }
        if let type = t.blockType {
            let (err, written, encodeSeconds) = try streamBlocks(t, type, source: source, sink: sink)
            row += [("quantized", .bool(true)), ("scheme", .string(scheme.name)), ("type", .string(type.name))]
            if let r = t.rule { row.append(("rule", .string(r))) }
            if imatrixPath != nil { row.append(("imatrix", .bool(t.importance != nil))) }
            row += [("granularity", .string(Granularity.group(type.blockSize).description)), ("bytes_out", .int(written))]
            let stored = type.rowBytes(e.info.count)
            row += metric("bits_per_weight", Double(stored * 8) / Double(e.info.count))
            row += errorMetrics(err)
            return TensorOutcome(row: .object(row), error: err, written: written, stored: stored, encodeSeconds: encodeSeconds)
        }
        if case let .integer(bits) = scheme, t.permuteHeads == nil, let rtn = RTNStream(quantizer, bits: bits, cols: t.cols, run: run, weightDType: e.info.dtype) {
            let (err, written, encodeSeconds) = try streamRTN(t, rtn, source: source, sink: sink)
            row += [("quantized", .bool(true)), ("scheme", .string(scheme.name)), ("granularity", .string(quantizer.granularity.description)),
                    ("bytes_out", .int(written))]
            let stored = format == .fake ? storedBytes(t, quantizer) : written
            row += metric("bits_per_weight", Double(stored * 8) / Double(e.info.count))
            row += errorMetrics(err)
            return TensorOutcome(row: .object(row), error: err, written: written, stored: stored, encodeSeconds: encodeSeconds)
        }
        var x = decodeFloats(source, e)
        if let bad = x.firstIndex(where: { !$0.isFinite }) {
            throw FormatError(file: source.filePath(of: e), tensor: e.name, "element \(bad) is \(x[bad]); cannot quantize a non-finite value")
        }
        if let h = t.permuteHeads { x = LlamaCppExport.permuteRows(x, rows: t.rows, cols: t.cols, heads: h)! }
        let pieces = quantizer.quantize(x, rows: t.rows, cols: t.cols, run: run, weightDType: e.info.dtype)
        var err = ErrorAccumulator()
        x.withUnsafeBufferPointer { a in pieces.decoded.withUnsafeBufferPointer { err.add(a.baseAddress!, $0.baseAddress!, count: x.count) } }
        var written = 0
        if format == .fake {
            var out = [UInt8](repeating: 0, count: e.info.byteCount)
            pieces.decoded.withUnsafeBufferPointer { p in out.withUnsafeMutableBytes { Codec.encode(p.baseAddress!, count: x.count, as: e.info.dtype, into: $0.baseAddress!) } }
            try out.withUnsafeBytes { try sink.write(t.firstOutput, $0) }
            written = out.count
        } else {
            for (k, blob) in pieces.blobs.enumerated() {
                try blob.withUnsafeBytes { try sink.write(t.firstOutput + k, $0) }
                written += blob.count
            }
        }
        row += [("quantized", .bool(true)), ("scheme", .string(scheme.name)), ("granularity", .string(quantizer.granularity.description)),
                ("bytes_out", .int(written))]
        let stored = format == .fake ? storedBytes(t, quantizer) : written
        row += metric("bits_per_weight", Double(stored * 8) / Double(x.count))
        row += errorMetrics(err) + pieces.extra
        return TensorOutcome(row: .object(row), error: err, written: written, stored: stored)
    }

    /// Block formats need no whole-tensor statistics: rows go through in ~1 MB pieces (decode,
    /// encode, decode back for the error, write), so memory stays small and caches stay warm. Q/K
    /// projections re-ordered for llama.cpp are decoded whole and permuted first (blocks run along
    /// rows, so the bytes are the permuted rows' bytes).
    private func streamBlocks(_ t: Task, _ type: GGMLType, source: Checkpoint, sink: QuantizeSink) throws -> (ErrorAccumulator, Int, Double) {
        let e = t.entry
        source.willNeed(e)
        defer { source.release(e) }
        let src = source.bytes(e)
        let permuted: [Float]? = t.permuteHeads.flatMap { LlamaCppExport.permuteRows(decodeFloats(source, e), rows: t.rows, cols: t.cols, heads: $0) }
        let inSize = e.info.dtype.size!, cols = t.cols
        let rowsPer = max(1, (1 << 18) / max(1, cols))
        let x = UnsafeMutablePointer<Float>.allocate(capacity: rowsPer * cols)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: rowsPer * cols)
        let blob = UnsafeMutableRawPointer.allocate(byteCount: type.rowBytes(rowsPer * cols), alignment: 64)
        let back = UnsafeMutableRawPointer.allocate(byteCount: rowsPer * cols * inSize, alignment: 64)
        defer { x.deallocate(); y.deallocate(); blob.deallocate(); back.deallocate() }
        var err = ErrorAccumulator(), written = 0, encodeSeconds = 0.0
        var r = 0
        while r < t.rows {
            let m = min(rowsPer, t.rows - r), n = m * cols
            if let permuted {
                permuted.withUnsafeBufferPointer { x.update(from: $0.baseAddress! + r * cols, count: n) }
            } else {
                Codec.decode(e.info.dtype, src.baseAddress! + r * cols * inSize, count: n, into: x)
            }
            try QuantizeJob.requireFinite(x, n, first: r * cols, source, e)
            let started = monotonicSeconds()
            if let qw = t.importance {
                for k in 0..<m { type.encodeRow(x + k * cols, count: cols, weights: qw, into: blob + type.rowBytes(k * cols)) }
            } else {
                type.encode(x, count: n, into: blob)
            }
            encodeSeconds += monotonicSeconds() - started
            type.decode(blob, count: n, into: y)
            err.add(x, y, count: n)
            if format == .fake {
                Codec.encode(y, count: n, as: e.info.dtype, into: back)
                try sink.write(t.firstOutput, at: r * cols * inSize, UnsafeRawBufferPointer(start: back, count: n * inSize))
                written += n * inSize
            } else {
                try sink.write(t.firstOutput, at: type.rowBytes(r * cols), UnsafeRawBufferPointer(start: blob, count: type.rowBytes(n)))
                written += type.rowBytes(n)
            }
            r += m
        }
        return (err, written, encodeSeconds)
    }

    /// Round-to-nearest integers by runs within a row (channel or group scales) go through in ~1 MB
    /// pieces of rows like the block formats: one C pass per piece gives the packed codes, the
    /// scales and zero points and the decoded values, whose error is measured while in cache.
    private func streamRTN(_ t: Task, _ rtn: RTNStream, source: Checkpoint, sink: QuantizeSink) throws -> (ErrorAccumulator, Int, Double) {
        let e = t.entry
        source.willNeed(e)
        defer { source.release(e) }
        let src = source.bytes(e)
        let inSize = e.info.dtype.size!, cols = t.cols, runs = cols / rtn.run
        let rowsPer = max(1, (1 << 18) / max(1, cols))
        let x = UnsafeMutablePointer<Float>.allocate(capacity: rowsPer * cols)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: rowsPer * cols)
        let packed = UnsafeMutablePointer<UInt32>.allocate(capacity: rowsPer * rtn.words)
        let back = UnsafeMutableRawPointer.allocate(byteCount: rowsPer * cols * inSize, alignment: 64)
        defer { x.deallocate(); y.deallocate(); packed.deallocate(); back.deallocate() }
        var scales = [Float](repeating: 0, count: t.rows * runs), zeros = scales
        var err = ErrorAccumulator(), written = 0, encodeSeconds = 0.0
        var r = 0
        while r < t.rows {
            let m = min(rowsPer, t.rows - r), n = m * cols
            Codec.decode(e.info.dtype, src.baseAddress! + r * cols * inSize, count: n, into: x)
            try QuantizeJob.requireFinite(x, n, first: r * cols, source, e)
            let started = monotonicSeconds()
            scales.withUnsafeMutableBufferPointer { s in
                zeros.withUnsafeMutableBufferPointer { z in
                    wt_rtn_rows(x, m, cols, rtn.run, Int32(rtn.bits), rtn.symmetric ? 1 : 0, rtn.scaleKind, rtn.epsilon,
                                s.baseAddress! + r * runs, z.baseAddress! + r * runs, packed, rtn.words, y)
                }
            }
            err.add(x, y, count: n)
            encodeSeconds += monotonicSeconds() - started
            if format == .fake {
                Codec.encode(y, count: n, as: e.info.dtype, into: back)
                try sink.write(t.firstOutput, at: r * cols * inSize, UnsafeRawBufferPointer(start: back, count: n * inSize))
                written += n * inSize
            } else {
                try sink.write(t.firstOutput, at: r * rtn.words * 4, UnsafeRawBufferPointer(start: packed, count: m * rtn.words * 4))
                written += m * rtn.words * 4
            }
            r += m
        }
        guard format == .compressedTensors else { return (err, written, encodeSeconds) }
        var blobs = [encodeFloats(scales, as: rtn.scaleDType), int64Bytes([Int64(t.rows), Int64(cols)])]
        if !rtn.symmetric {
            let zp = zeros.map { Int8(clampedRound($0, -128, 127)) }
            blobs.append(int32Bytes(CompressedTensorsLayout.packColumns(zp, rows: t.rows, cols: runs, bits: rtn.bits)))
        }
        for (k, blob) in blobs.enumerated() {
            try blob.withUnsafeBytes { try sink.write(t.firstOutput + 1 + k, $0) }
            written += blob.count
        }
        return (err, written, encodeSeconds)
    }

    /// Refuses a decoded piece holding NaN or an infinity, naming the element.
    private static func requireFinite(_ x: UnsafePointer<Float>, _ n: Int, first: Int, _ source: Checkpoint, _ e: Checkpoint.Entry) throws {
        let bad = wt_first_nonfinite(x, n)
        guard bad < n else { return }
        throw FormatError(file: source.filePath(of: e), tensor: e.name, "element \(first + bad) is \(x[bad]); cannot quantize a non-finite value")
    }

    /// For fake quantization, the bytes the scheme would store (so bits per weight is comparable).
    private func storedBytes(_ t: Task, _ q: TensorQuantizer) -> Int {
        let n = t.rows * t.cols, run = t.run ?? n
        switch scheme {
        case let .ggml(type): return type.rowBytes(n)
        case .fp8: return n + n / run * TensorQuantizer.scaleDType(for: t.entry.info.dtype).size!
        default:
            let scales = n / run * TensorQuantizer.scaleDType(for: t.entry.info.dtype).size!
            let zeros = q.effectiveSymmetric ? 0 : (n / run * scheme.storedBits + 7) / 8
            return (n * scheme.storedBits + 7) / 8 + scales + zeros
        }
    }

    /// transformers 5.x meets packed zero points with an unpacked parameter and refuses the model
    /// (llm-compressor issue 1618, transformers PR 47430); vLLM and compressed-tensors load it.
    static let asymmetricPackWarning = "asymmetric pack-quantized weights (packed weight_zero_point) load in vLLM and compressed-tensors, "
        + "but not in transformers 5.x (llm-compressor issue 1618, transformers PR 47430); use --symmetric for a checkpoint transformers loads"

    static func ggufPlainType(_ d: DType) -> (id: UInt32, size: Int)? {
        switch d {
        case .F32, .F64, .F8_E4M3, .F8_E5M2: return (0, 4)
        case .F16: return (1, 2)
        case .BF16: return (30, 2)
        case .I8: return (24, 1)
        case .I16: return (25, 2)
        case .I32: return (26, 4)
        case .I64: return (27, 8)
        default: return nil
        }
    }

    static func refuseOverwriting(_ output: String, _ source: Checkpoint) throws {
        let dir = FileSystem.dirname(output)
        guard FileSystem.kind(dir) == .directory else { throw FormatError(file: output, "the folder '\(dir)' does not exist") }
        guard let out = FileSystem.realPath(output) else { return }
        for f in source.files where FileSystem.realPath(f.path) == out {
            throw FormatError(file: output, "is an input of this command; choose another output")
        }
    }

    private func ggufMetadata(source: Checkpoint, configPath: String?, llama: LlamaCppExport?, vocabulary: GGUFTokenizer?,
                              anyQuantized: Bool) -> [(String, GGUFValue)] {
        var kv: [(String, GGUFValue)] = []
        var config: [(String, JSONValue)] = []
        if let configPath, let bytes = try? FileSystem.readAll(configPath), case let .object(c)? = try? JSONParser.parse(bytes) { config = c }
        func string(_ k: String) -> String? { config.first { $0.0 == k }?.1.stringValue }
        if let arch = llama?.arch ?? string("model_type") { kv.append(("general.architecture", .string(arch))) }
        if llama != nil { kv.append(("general.type", .string("model"))) }
        let base = FileSystem.basename(source.folder ?? source.path)
        let fallback = base.hasSuffix(".safetensors") ? String(base.dropLast(".safetensors".count)) : base
        kv.append(("general.name", .string(string("_name_or_path").map { FileSystem.basename($0) } ?? fallback)))
        if anyQuantized, llama != nil, let mix = QuantMix(scheme.name) {
            kv.append(("general.quantization_version", .uint32(2)))
            kv.append(("general.file_type", .uint32(mix.llamaFileType)))
        } else if anyQuantized, case let .ggml(t) = scheme {
            if t.isQuantized || llama != nil { kv.append(("general.quantization_version", .uint32(2))) }
            if let ft = t.fileType { kv.append(("general.file_type", .uint32(ft))) }
        }
        kv += llama?.metadata ?? []
        if llama != nil { kv += vocabulary?.metadata ?? [("tokenizer.ggml.model", .string("none"))] }
        kv.append(("wtool.version", .string(wtoolVersion)))
        kv.append(("wtool.command", .string(settings.provenance)))
        return kv
    }

    /// compressed-tensors' `quantization_config`, ignoring every Linear its `targets` would match
    /// that was left unquantized: each kept weight matrix, and `lm_head` unless it was quantized.
    /// A tied model (`tie_word_embeddings`) has no lm_head tensor, yet transformers builds the
    /// module and would treat it as quantized (int: it fails to load; fp8: random scales), so it
    /// is ignored whether or not the checkpoint stores it, as llm-compressor always does.
    private func ctConfig(_ tasks: [Task], gran: Granularity) -> JSONValue {
        var ignore = tasks.filter { $0.run == nil && $0.entry.info.shape.count == 2 && $0.entry.name.hasSuffix(".weight") && $0.entry.info.dtype.isFloatingPoint }
            .map { String($0.entry.name.dropLast(".weight".count)) }
        let headQuantized = tasks.contains { $0.run != nil && ($0.entry.name == "lm_head.weight" || $0.entry.name.hasSuffix(".lm_head.weight")) }
        if !headQuantized && !ignore.contains(where: { $0 == "lm_head" || $0.hasSuffix(".lm_head") }) { ignore.append("lm_head") }
        let strategy: String, group: Int?
        switch gran {
        case .tensor: strategy = "tensor"; group = nil
        case .channel: strategy = "channel"; group = nil
        case let .group(g): strategy = "group"; group = g
        }
        let isFloat: Bool
        if case .fp8 = scheme { isFloat = true } else { isFloat = false }
        return CompressedTensorsLayout.config(format: isFloat ? "float-quantized" : "pack-quantized", bits: scheme.storedBits,
                                              type: isFloat ? "float" : "int",
                                              symmetric: TensorQuantizer(scheme: scheme, format: format, granularity: gran, symmetric: symmetric ?? true).effectiveSymmetric,
                                              strategy: strategy, groupSize: group, ignore: ignore)
    }
}

/// The two writers behind one interface.
enum QuantizeSink: Sendable {
    case gguf(GGUFWriter)
    case safetensors(CheckpointWriter)

    func write(_ index: Int, at offset: Int = 0, _ bytes: UnsafeRawBufferPointer) throws {
        switch self {
        case let .gguf(w): try w.write(tensor: index, at: offset, bytes)
        case let .safetensors(w): if w.owns(index) { try w.write(tensor: index, at: offset, bytes) }   // --part: the others' pieces are theirs
        }
    }

    /// Whether any of these outputs is this process's to write (always, unless --part).
    func owns(_ range: Range<Int>) -> Bool {
        switch self {
        case .gguf: return true
        case let .safetensors(w): return range.isEmpty || range.contains { w.owns($0) }
        }
    }
    func commit() throws { switch self { case let .gguf(w): try w.commit(); case let .safetensors(w): try w.commit() } }
    func abort() { switch self { case let .gguf(w): w.abort(); case let .safetensors(w): w.abort() } }
}
