import ArgumentParser
import SafeTensors
import Surgery

struct TaskVectorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "task-vector",
        abstract: "Extract, apply, combine and analyse task vectors (fine-tune minus base).",
        discussion: """
        A task vector is FT - BASE. extract writes it (f32 by default); apply adds scaled task \
        vectors to a base (negative scales subtract: forgetting), or combines them with TIES or DARE \
        like merge; analyze reports norms, cosines and sign conflicts; audit ranks what is out of \
        line in a fine-tune's change (candidate trigger tokens, backdoor rows). Wherever a task vector is \
        expected, a fine-tuned model works too (its delta from --base is computed on the fly): files \
        written by extract are recognised by their metadata, --inputs overrides. See wtool-task-vector(1).
        """,
        subcommands: [Extract.self, Apply.self, Analyze.self, Audit.self]
    )

    struct Extract: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write FT - BASE as a checkpoint, recording the base.",
            discussion: """
            Every float tensor of FT (that the base has, with the same shape) becomes FT - BASE, \
            computed in f64 and stored as --dtype (default f32: a bf16 delta of bf16 weights is not \
            exact). Integer tensors are skipped and listed. The metadata records the base's path and \
            a CRC-32 of each base tensor, so apply can warn when given another base. --density keeps \
            the largest fraction of each delta by magnitude (TIES trim) and reports the error it costs.
            """)
        @Option(name: .long, help: ArgumentHelp("The base model.", valueName: "BASE")) var base: String
        @Argument(help: ArgumentHelp("The fine-tuned model.", valueName: "FT")) var finetuned: String
        @Option(name: .short, help: ArgumentHelp("Output: a .safetensors file or a folder.", valueName: "OUT")) var output: String
        @Option(name: .long, help: ArgumentHelp("Storage dtype of the deltas: f32 (default), bf16, f16.", valueName: "DTYPE")) var dtype: String = "f32"
        @Option(name: .long, help: ArgumentHelp("Keep this fraction of each delta (largest |value|).", valueName: "D")) var density: Double?
        @Option(name: .long, help: ArgumentHelp("Largest shard (folder output).", valueName: "SIZE")) var shardSize: String?
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE")) var report: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard DType(userName: dtype)?.isFloatingPoint == true else { throw ValidationError("unknown --dtype '\(dtype)'") }
            if let density, !(density > 0 && density <= 1) { throw ValidationError("--density must be in (0, 1]") }
            if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)'") }
        }

        func run() throws {
            var job = ExtractTaskVectorJob(base: base, finetuned: finetuned, output: output)
            job.dtype = DType(userName: dtype)!
            job.density = density ?? 1
            job.settings = common.settings(report: report, shardSize: shardSize)
            let r = try job.run()
            for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
            let s = Dictionary(uniqueKeysWithValues: r.summary)
            note("extracted \(s["tensors"]!.compact()) tensors (\(s["bytes_out"]!.compact()) bytes) -> \(output)", quiet: common.quiet)
        }
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "BASE + sum of scaled task vectors, or their TIES / DARE combination.",
            discussion: """
            sum: BASE + lambda * sum s_i TV_i, computed in f64 per entry. ties and dare use the merge \
            pipeline (sparsify with --density, weight by the scales, for ties elect signs and divide \
            by the agreeing weights; dare rescales the kept entries, --rescale l1 or inverse_density). \
            Tensors absent from every task vector, or left out by --include/--exclude, are copied from \
            the base; a task-vector tensor the base lacks, or of another shape, is an error. Output \
            dtype: the base's unless --dtype. --density and --normalize belong to ties and dare, \
            --rescale and --seed to dare; given with another method they are refused. ties and dare \
            stream a tensor above 2^24 entries (WTOOL_BLOCK_ABOVE) in row blocks, with the same bytes.

            --coefficients FILE (aTLAS, anisotropic scaling): one coefficient per task vector and \
            parameter block instead of --scale, BASE + lambda * sum lambda_(t,block) TV_t. FILE is \
            JSON {"blocks": [tensor-name globs], "coefficients": [[per block] per task vector]}, or \
            aTLAS's own torch.save file (learned_additions.pt: a [tasks, blocks] tensor) with \
            --block-order naming its blocks (the model's parameter names in order, one per line). \
            Every tensor of every task vector must fall in exactly one block, and every block must \
            hold a tensor; the report gives each tensor's effective coefficients.
            """)
        @Option(name: .long, help: ArgumentHelp("The base model.", valueName: "BASE")) var base: String
        @Argument(help: ArgumentHelp("Task vectors (or fine-tuned models).", valueName: "TV")) var vectors: [String]
        @Option(name: .short, help: ArgumentHelp("Output: a .safetensors file or a folder.", valueName: "OUT")) var output: String
        @Option(name: .long, help: ArgumentHelp("Scale of each task vector, comma-separated (negative subtracts; default 1).", valueName: "S,...")) var scale: String?
        @Option(name: .long, help: ArgumentHelp("sum (default), ties or dare.", valueName: "METHOD")) var method: String = "sum"
        @Option(name: .long, help: ArgumentHelp("ties/dare: fraction of each delta kept (default 1).", valueName: "D")) var density: Double?
        @Option(name: .long, help: ArgumentHelp("Scale of the combined delta (default 1).", valueName: "L")) var lambda: Double = 1
        @Option(name: .long, help: ArgumentHelp("ties/dare: divide by the (agreeing) weights: true or false (default: true for ties).", valueName: "BOOL")) var normalize: Bool?
        @Option(name: .long, help: ArgumentHelp("dare: l1 (default), inverse_density or none.", valueName: "RULE")) var rescale: String?
        @Option(name: .long, help: ArgumentHelp("Seed for dare (default 0).", valueName: "N")) var seed: UInt64?
        @Option(name: .long, help: ArgumentHelp("task-vector, model or auto (default: by metadata).", valueName: "KIND")) var inputs: String = "auto"
        @Option(name: .long, help: ArgumentHelp("Output dtype (default: the base's).", valueName: "DTYPE")) var dtype: String?
        @Option(name: .long, help: ArgumentHelp("aTLAS: a coefficient per (task vector, block): JSON, or aTLAS's .pt with --block-order.", valueName: "FILE")) var coefficients: String?
        @Option(name: .long, help: ArgumentHelp("The block names of an aTLAS .pt coefficient file, in order (one per line, or a JSON array).", valueName: "FILE")) var blockOrder: String?
        @Option(name: .long, help: ArgumentHelp("Largest shard (folder output).", valueName: "SIZE")) var shardSize: String?
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE")) var report: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard ApplyTaskVectorJob.Method(rawValue: method) != nil else { throw ValidationError("--method must be sum, ties or dare") }
            guard TaskVectorSource.Kind(rawValue: inputs) != nil else { throw ValidationError("--inputs must be auto, task-vector or model") }
            if let rescale, !["l1", "inverse_density", "none"].contains(rescale) { throw ValidationError("--rescale must be l1, inverse_density or none") }
            if method == "sum" && (density != nil || normalize != nil) { throw ValidationError("--density and --normalize belong to --method ties or dare") }
            if method != "dare" && (rescale != nil || seed != nil) { throw ValidationError("--rescale and --seed belong to --method dare") }
            if let dtype, DType(userName: dtype)?.isFloatingPoint != true { throw ValidationError("unknown --dtype '\(dtype)'") }
            if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)'") }
            if vectors.isEmpty { throw ValidationError("name at least one task vector") }
        }

        func run() throws {
            var job = ApplyTaskVectorJob(base: base, vectors: vectors, output: output)
            if let scale {
                let v = scale.split(separator: ",").map { Double($0) }
                guard v.allSatisfy({ $0 != nil }) else { throw UsageError("--scale: numbers, comma-separated") }
                job.scales = v.count == 1 ? Array(repeating: v[0]!, count: vectors.count) : v.map { $0! }
            }
            job.method = ApplyTaskVectorJob.Method(rawValue: method)!
            job.density = density ?? 1
            job.lambda = lambda
            job.normalize = normalize
            job.rescale = rescale == "none" ? nil : RescaleRule(rawValue: rescale ?? "l1")
            job.seed = seed ?? 0
            job.kind = TaskVectorSource.Kind(rawValue: inputs)!
            job.dtype = dtype.flatMap { DType(userName: $0) }
            job.coefficients = coefficients
            job.blockOrder = blockOrder
            job.settings = common.settings(report: report, shardSize: shardSize)
            let r = try job.run()
            for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
            let s = Dictionary(uniqueKeysWithValues: r.summary)
            note("applied \(vectors.count) task vector(s) with \(method): \(s["changed"]!.compact()) of \(s["tensors"]!.compact()) tensors changed -> \(output)", quiet: common.quiet)
        }
    }

    struct Analyze: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Norms, cosines and sign conflicts of task vectors, per tensor and for the model.",
            discussion: """
            Per tensor and task vector: L2 norm, max |value|, fraction of near-zeros (|x| <= \
            --zero-tol); per pair: cosine similarity and the TIES sign-conflict fraction (among \
            entries where both are non-zero, those of opposite signs); for the whole model the same \
            from sums over every tensor (the cosine matrix). --spectrum adds, for 2-D tensors, the \
            top singular values and the ranks holding 90% and 99% of the energy (LAPACK). A summary \
            goes to stderr: the most and least similar tensors and the largest norms.
            """)
        @Argument(help: ArgumentHelp("Task vectors (or fine-tuned models, with --base).", valueName: "TV")) var vectors: [String]
        @Option(name: .long, help: ArgumentHelp("The base, for fine-tuned models given as inputs.", valueName: "BASE")) var base: String?
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here (else stdout).", valueName: "FILE")) var report: String?
        @Flag(name: .long, help: "Singular values and energy ranks of 2-D tensors.") var spectrum = false
        @Option(name: .long, help: ArgumentHelp("How many singular values to report (default 8).", valueName: "K")) var top: Int = 8
        @Option(name: .long, help: ArgumentHelp("|x| at most this counts as near-zero (default 1e-8).", valueName: "X")) var zeroTol: Double = 1e-8
        @Option(name: .long, help: ArgumentHelp("task-vector, model or auto (default: by metadata).", valueName: "KIND")) var inputs: String = "auto"
        @OptionGroup var common: CommonOptions

        func validate() throws {
            try common.refusePart("task-vector analyze")
            if vectors.isEmpty { throw ValidationError("name at least one task vector") }
            guard TaskVectorSource.Kind(rawValue: inputs) != nil else { throw ValidationError("--inputs must be auto, task-vector or model") }
            guard top >= 1 else { throw ValidationError("--top must be at least 1") }
        }

        func run() throws {
            var job = AnalyzeTaskVectorsJob(vectors: vectors)
            job.base = base
            job.kind = TaskVectorSource.Kind(rawValue: inputs)!
            job.spectrum = spectrum
            job.top = top
            job.zeroTolerance = zeroTol
            job.settings = common.settings()
            let r = try job.run()
            if let report { try r.write(to: report) } else { print(r.json.pretty()) }
            for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
            summarize(r)
        }

        private func summarize(_ r: RunReport) {
            guard !common.quiet else { return }
            let rows = r.tensors.compactMap { row -> (String, Double, Double)? in
                guard let name = row["name"]?.stringValue, let norms = row["norm"]?.arrayValue else { return nil }
                let cos = row["cosine"]?.arrayValue?.compactMap(\.doubleValue) ?? []
                return (name, cos.isEmpty ? .nan : cos.reduce(0, +) / Double(cos.count), norms.compactMap(\.doubleValue).max() ?? 0)
            }
            let byCos = rows.filter { !$0.1.isNaN }.sorted { $0.1 > $1.1 }
            if !byCos.isEmpty {
                note("most similar:  " + byCos.prefix(3).map { "\($0.0) (cos \(formatFixed($0.1, 3)))" }.joined(separator: ", "), quiet: false)
                note("least similar: " + byCos.suffix(3).reversed().map { "\($0.0) (cos \(formatFixed($0.1, 3)))" }.joined(separator: ", "), quiet: false)
            }
            note("largest norms: " + rows.sorted { $0.2 > $1.2 }.prefix(3).map { "\($0.0) (\(formatFixed($0.2, 4)))" }.joined(separator: ", "), quiet: false)
            if case let .array(m)? = Dictionary(uniqueKeysWithValues: r.summary)["cosine_matrix"], m.count > 1 {
                note("whole-model cosine matrix: " + m.map { $0.compact() }.joined(separator: " "), quiet: false)
            }
        }
    }
}
