import ArgumentParser
import Linalg
import SafeTensors
import Surgery

struct LowRankCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lowrank-svd",
        abstract: "LoRA extraction and merging, low-rank compression, PiSSA, spectra.",
        discussion: """
        Works on the 2-D weights of the linear layers (--include/--exclude choose others), in f32 \
        from any storage dtype, with one SVD engine: exact (LAPACK gesdd) or randomized \
        (Halko-Martinsson-Tropp, Gaussian test matrix seeded by --seed and the tensor name). \
        Singular vectors are signed so that each left vector's largest entry is positive. \
        See wtool-lowrank-svd(1).
        """,
        subcommands: [Extract.self, Apply.self, Compress.self, PiSSA.self, Spectrum.self]
    )

    struct Spectrum: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Singular values, numerical/stable/effective rank, energy ranks; intruder dimensions.",
            discussion: """
            Per weight (or per delta FT - BASE with --base): the top --top singular values (all with \
            --all), the numerical rank (sigma > sigma_1 * max(m, n) * eps), the stable rank \
            (sum sigma^2 / sigma_1^2), the effective rank (exp of the entropy of sigma / sum sigma) and \
            the energy ranks at 0.5, 0.9 and 0.99. With --base and --intruders: among the top \
            --intruder-k left singular vectors of FT, those whose largest |cosine| with any of BASE's \
            is below --intruder-epsilon (Shuttleworth et al.).
            """)
        @Argument(help: ArgumentHelp("A .safetensors file or a model folder.", valueName: "IN")) var input: String
        @Option(name: .long, help: ArgumentHelp("The base: spectra of IN - BASE.", valueName: "BASE")) var base: String?
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here (else stdout).", valueName: "FILE")) var report: String?
        @Option(name: .long, help: ArgumentHelp("Singular values to report (default 16).", valueName: "K")) var top: Int = 16
        @Flag(name: .long, help: "Report every singular value.") var all = false
        @Flag(name: .long, help: "Intruder dimensions of IN relative to --base.") var intruders = false
        @Option(name: .long, help: ArgumentHelp("Top singular vectors tested (default 10).", valueName: "K")) var intruderK: Int = 10
        @Option(name: .long, help: ArgumentHelp("Similarity below which a vector is an intruder (default 0.5).", valueName: "E")) var intruderEpsilon: Double = 0.5
        @OptionGroup var common: CommonOptions

        func validate() throws {
            try common.refusePart("lowrank-svd spectrum")
            guard top >= 1, intruderK >= 1 else { throw ValidationError("--top and --intruder-k must be at least 1") }
            if intruders && base == nil { throw ValidationError("--intruders needs --base") }
        }

        func run() throws {
            var job = SpectrumJob(input: input)
            job.base = base
            job.top = all ? nil : top
            job.intruders = intruders
            job.intruderK = intruderK
            job.intruderEpsilon = intruderEpsilon
            job.settings = common.settings()
            let r = try job.run()
            if let report { try r.write(to: report) } else { print(r.json.pretty()) }
            note("spectra of \(r.tensors.count) tensors", quiet: common.quiet)
        }
    }

    /// How many singular triplets: one rule.
    struct RankOptions: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("Keep at most R singular triplets.", valueName: "R")) var rank: Int?
        @Option(name: .long, help: ArgumentHelp("Keep this fraction of the energy (sum sigma^2).", valueName: "T")) var energy: Double?
        @Option(name: .long, help: ArgumentHelp("Keep sigma > sigma_1 / T.", valueName: "T")) var svRatio: Double?
        @Option(name: .long, help: ArgumentHelp("Keep sigma > E.", valueName: "E")) var svEpsilon: Double?

        var policy: RankPolicy? {
            if let rank { return .rank(rank) }
            if let energy { return .energy(energy) }
            if let svRatio { return .svRatio(svRatio) }
            if let svEpsilon { return .svEpsilon(svEpsilon) }
            return nil
        }

        func validate() throws {
            let given = [rank != nil, energy != nil, svRatio != nil, svEpsilon != nil].filter { $0 }.count
            guard given == 1 else { throw ValidationError("give exactly one of --rank, --energy, --sv-ratio, --sv-epsilon") }
            if let rank, rank < 1 { throw ValidationError("--rank must be at least 1") }
            if let energy, !(energy > 0 && energy <= 1) { throw ValidationError("--energy must be in (0, 1]") }
            if let svRatio, !(svRatio >= 1) { throw ValidationError("--sv-ratio must be >= 1") }
            if let svEpsilon, !(svEpsilon >= 0) { throw ValidationError("--sv-epsilon must be >= 0") }
        }
    }

    struct Compress: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace each weight by its best rank-k approximation (or write the two factors).",
            discussion: """
            The rank: --rank R (at most R), --energy T (the smallest k keeping a fraction T of \
            sum sigma^2), --sv-ratio T (sigma > sigma_1 / T) or --sv-epsilon E (sigma > E). Same names, \
            shapes and dtype; with --factored (needs --rank) <name>.left = U_k diag(sigma) [out, k] and \
            <name>.right = V_k^T [k, in] instead. --svd auto (default) is exact whenever that is cheap \
            (m*n*min(m,n) <= 2^29), or the rank is not fixed, and randomized otherwise; exact on a large \
            matrix with a small rank iterates to gesdd's top k (svd_iterations, svd_residual in the \
            report). The report gives each \
            tensor's rank and why, the energy kept, the measured relative Frobenius error and sizes.
            """)
        @Argument(help: ArgumentHelp("A .safetensors file or a model folder.", valueName: "IN")) var input: String
        @Option(name: .short, help: ArgumentHelp("Output: a .safetensors file or a folder.", valueName: "OUT")) var output: String
        @OptionGroup var ranks: RankOptions
        @Flag(name: .long, help: "Write the two factors instead of the product.") var factored = false
        @OptionGroup var svd: SVDOptions
        @Option(name: .long, help: ArgumentHelp("Largest shard (folder output).", valueName: "SIZE")) var shardSize: String?
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE")) var report: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)'") }
        }

        func run() throws {
            var job = CompressJob(input: input, output: output)
            job.policy = ranks.policy!
            job.factored = factored
            job.svd = svd.choice
            job.settings = common.settings(report: report, shardSize: shardSize)
            let r = try job.run()
            let s = Dictionary(uniqueKeysWithValues: r.summary)
            note("compressed \(s["targets"]!.compact()) tensors: \(s["bytes_before"]!.compact()) -> \(s["bytes_after"]!.compact()) bytes -> \(output)", quiet: common.quiet)
        }
    }

    struct Extract: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "FT - BASE of every linear weight, truncated by SVD, as a PEFT LoRA adapter.",
            discussion: """
            Writes ADAPTER_DIR/adapter_config.json and adapter_model.safetensors, which PEFT loads \
            with PeftModel.from_pretrained: lora_A [r, in] and lora_B [out, r] per module with \
            B A = the truncated delta; lora_alpha = r and per-module ranks in rank_pattern and \
            alpha_pattern alike, so PEFT's scale is 1 and its merged weight is BASE plus the \
            truncation. --split sqrt (default, mergekit's) puts sqrt(sigma) in both factors, left \
            (PEFT's converter) all of sigma in B. Embeddings and lm_head: --embeddings full (default: \
            saved whole in modules_to_save), lora (lora_embedding_A/B), or skip. Other changed tensors \
            (norms) go to modules_to_save (or are skipped and listed with --skip-others); changed \
            biases of adapted modules become lora_B.bias with lora_bias. Tensors are skipped only \
            when unchanged. --format dora writes a DoRA adapter (use_dora): the same B A plus \
            lora_magnitude_vector = the fine-tune's exact norm of each output feature, so PEFT's \
            merged weight has FT's row magnitudes and the truncation's directions (exact when the \
            rank holds the whole delta). Large matrices (randomized, or exact by converged subspace \
            iteration) run two at a time with every worker on their products, in fixed blocks, so \
            the bytes do not depend on --threads.
            """)
        @Option(name: .long, help: ArgumentHelp("The base model.", valueName: "BASE")) var base: String
        @Argument(help: ArgumentHelp("The fine-tuned model.", valueName: "FT")) var finetuned: String
        @Option(name: .short, help: ArgumentHelp("The adapter folder.", valueName: "ADAPTER_DIR")) var output: String
        @OptionGroup var ranks: RankOptions
        @Option(name: .long, help: ArgumentHelp("sqrt (default) or left.", valueName: "SPLIT")) var split: String = "sqrt"
        @Option(name: .long, help: ArgumentHelp("full (default), lora or skip.", valueName: "MODE")) var embeddings: String = "full"
        @Flag(name: .long, help: "Skip (and list) changed norms instead of saving them in modules_to_save.") var skipOthers = false
        @Option(name: .long, help: ArgumentHelp("lora (default) or dora (magnitudes = FT's exact row norms).", valueName: "FORMAT")) var format: String = "lora"
        @OptionGroup var svd: SVDOptions
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here (default ADAPTER_DIR/wtool-report.json).", valueName: "FILE")) var report: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard ExtractLoRAJob.Split(rawValue: split) != nil else { throw ValidationError("--split must be sqrt or left") }
            guard ExtractLoRAJob.Embeddings(rawValue: embeddings) != nil else { throw ValidationError("--embeddings must be full, lora or skip") }
            guard format == "lora" || format == "dora" else { throw ValidationError("--format must be lora or dora") }
        }

        func run() throws {
            var job = ExtractLoRAJob(base: base, finetuned: finetuned, output: output)
            job.policy = ranks.policy!
            job.split = ExtractLoRAJob.Split(rawValue: split)!
            job.embeddings = ExtractLoRAJob.Embeddings(rawValue: embeddings)!
            job.saveOthers = !skipOthers
            job.dora = format == "dora"
            job.svd = svd.choice
            job.settings = common.settings(report: report)
            let r = try job.run()
            let s = Dictionary(uniqueKeysWithValues: r.summary)
            note("extracted \(s["lora_modules"]!.compact()) LoRA modules (max rank \(s["max_rank"]!.compact()), \(s["adapter_bytes"]!.compact()) bytes) -> \(output)", quiet: common.quiet)
        }
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge a PEFT LoRA adapter into its base, as PEFT's merge_and_unload does.",
            discussion: """
            W' = W + scale * B A per adapted module, scale = lora_alpha / r (lora_alpha / sqrt(r) with \
            use_rslora) after rank_pattern and alpha_pattern (PEFT's matching: the first key k with \
            re.match(r"(.*\\.)?(k)$", module)), times --scale; transposed for fan_in_fan_out \
            (GPT-2 Conv1D) and embeddings; lora_B.bias added when lora_bias; modules_to_save replace \
            their weights. B A is computed in f32 like PEFT, the sum rounded once to the base's dtype. \
            Refused with the reason: other PEFT types, DoRA, convolution LoRA, layers_to_transform.
            """)
        @Option(name: .long, help: ArgumentHelp("The base model.", valueName: "BASE")) var base: String
        @Argument(help: ArgumentHelp("A PEFT LoRA adapter folder.", valueName: "ADAPTER_DIR")) var adapter: String
        @Option(name: .short, help: ArgumentHelp("Output: a .safetensors file or a folder.", valueName: "OUT")) var output: String
        @Option(name: .long, help: ArgumentHelp("Merge at this strength (default 1).", valueName: "S")) var scale: Double = 1
        @Option(name: .long, help: ArgumentHelp("Largest shard (folder output).", valueName: "SIZE")) var shardSize: String?
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE")) var report: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard scale.isFinite else { throw ValidationError("--scale must be a number") }
            if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)'") }
        }

        func run() throws {
            var job = ApplyLoRAJob(base: base, adapter: adapter, output: output)
            job.scale = scale
            job.settings = common.settings(report: report, shardSize: shardSize)
            let r = try job.run()
            for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
            let s = Dictionary(uniqueKeysWithValues: r.summary)
            note("merged \(s["lora_modules"]!.compact()) LoRA modules and \(s["modules_to_save"]!.compact()) saved modules -> \(output)", quiet: common.quiet)
        }
    }

    struct PiSSA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pissa",
            abstract: "Split each weight into principal components (a PEFT adapter) and the residual model.",
            discussion: """
            PiSSA (PEFT's pissa_init): W = U S V^T; A = diag(sqrt(S_r)) V_r^T, B = U_r diag(sqrt(S_r)). \
            OUT_DIR holds the residual model W - B A (config and tokenizer copied) and \
            OUT_DIR/pissa_adapter the adapter (lora_alpha = r: scale 1, init_lora_weights true so \
            that PEFT loads the weights as they are), so residual plus adapter is the original model. \
            Fine-tune the adapter on the residual model.
            """)
        @Argument(help: ArgumentHelp("A model folder or .safetensors file.", valueName: "IN")) var input: String
        @Option(name: .short, help: ArgumentHelp("The output folder.", valueName: "OUT_DIR")) var output: String
        @Option(name: .long, help: ArgumentHelp("Rank of the adapter.", valueName: "R")) var rank: Int
        @OptionGroup var svd: SVDOptions
        @Option(name: .long, help: ArgumentHelp("Largest shard of the residual model.", valueName: "SIZE")) var shardSize: String?
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE")) var report: String?
        @OptionGroup var common: CommonOptions

        func validate() throws {
            guard rank >= 1 else { throw ValidationError("--rank must be at least 1") }
            if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)'") }
        }

        func run() throws {
            var job = PiSSAJob(input: input, output: output)
            job.rank = rank
            job.svd = svd.choice
            job.settings = common.settings(report: report, shardSize: shardSize)
            let r = try job.run()
            let s = Dictionary(uniqueKeysWithValues: r.summary)
            note("PiSSA: \(s["lora_modules"]!.compact()) modules at rank \(s["rank"]!.compact()) -> \(output) (adapter in \(PiSSAJob.adapterFolder)/)", quiet: common.quiet)
        }
    }
}
