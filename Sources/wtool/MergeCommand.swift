import ArgumentParser
import SafeTensors
import Surgery

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge checkpoints: every mergekit method, from a mergekit YAML recipe or from flags.",
        discussion: """
        Methods: linear, slerp, nuslerp, multislerp, karcher, task_arithmetic, ties, dare_ties, \
        dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear, sce, model_stock, nearswap, \
        passthrough. Recipes are mergekit's YAML (merge_method, base_model, models or slices, \
        parameters with gradients and filters, dtype, out_dtype, tokenizer_source); model paths are \
        local and resolve as mergekit's do: relative to the current directory, or, only when \
        nothing is there, to the recipe's folder (a warning when both exist). --include/--exclude \
        choose the tensors merged; the others are copied unchanged from the base (or the first model). Values are computed in f32 with f64 accumulation whatever the storage \
        or recipe dtype; the output dtype is --dtype, else out_dtype, else dtype, else the base's. \
        DARE and DELLA draw from a generator seeded by --seed and the tensor name, so the output does \
        not depend on --threads. Every input header, shape and parameter is checked before any tensor \
        is merged. The task-arithmetic family (ties, dare_*, breadcrumbs*, della*) streams every tensor \
        in row blocks, every other method a tensor above 2^24 entries (WTOOL_BLOCK_ABOVE), with the \
        same bytes: a huge embedding is never decoded whole. See \
        wtool-merge(1) for the methods' math and where wtool deliberately differs from mergekit.
        """
    )

    @Option(name: .long, help: ArgumentHelp("A mergekit YAML recipe.", valueName: "FILE"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Merge method (without --config).", valueName: "NAME"))
    var method: String?

    @Option(name: .long, help: ArgumentHelp("Base model (without --config).", valueName: "PATH"))
    var base: String?

    @Argument(help: ArgumentHelp("Models to merge (without --config).", valueName: "MODEL"))
    var models: [String] = []

    @Option(name: .short, help: ArgumentHelp("Output: a .safetensors file or a folder.", valueName: "OUT"))
    var output: String

    @Option(name: .long, help: ArgumentHelp("Per-model weights, comma-separated (one value applies to all).", valueName: "W,..."))
    var weight: String?

    @Option(name: .long, help: ArgumentHelp("Per-model densities (TIES, DARE, breadcrumbs, DELLA).", valueName: "D,..."))
    var density: String?

    @Option(name: .long, help: ArgumentHelp("Per-model breadcrumbs gamma.", valueName: "G,..."))
    var gamma: String?

    @Option(name: .long, help: ArgumentHelp("Per-model DELLA epsilon.", valueName: "E,..."))
    var epsilon: String?

    @Option(name: .long, help: ArgumentHelp("Global parameter NAME=VALUE (t=0.5, lambda=1, normalize=false, rescale=inverse_density...; repeatable).", valueName: "NAME=VALUE"))
    var param: [String] = []

    @Option(name: .long, help: ArgumentHelp("Output dtype: f32, f16, bf16 (default: out_dtype, dtype, else the base's).", valueName: "DTYPE"))
    var dtype: String?

    @Option(name: .long, help: ArgumentHelp("Largest shard, e.g. 5GB (folder output).", valueName: "SIZE"))
    var shardSize: String?

    @Option(name: .long, help: ArgumentHelp("Seed for DARE and DELLA (default 0).", valueName: "N"))
    var seed: UInt64?

    @Option(name: .long, help: ArgumentHelp("An interpolation path: START:STOP:COUNT points t (both ends included), one checkpoint each in OUT/t<value>/, in one pass (linear: weights 1-t, t; slerp: t).", valueName: "A:B:N"))
    var path: String?

    @Flag(name: .long, help: "Validate everything and print the plan without writing.")
    var dryRun = false

    @Option(name: .long, help: ArgumentHelp("Write the JSON report here (default OUT/wtool-report.json).", valueName: "FILE"))
    var report: String?

    @OptionGroup var common: CommonOptions

    func validate() throws {
        if config != nil && (method != nil || base != nil || !models.isEmpty || weight != nil || density != nil) {
            throw ValidationError("give either --config or --method with models, not both")
        }
        if config == nil && method == nil { throw ValidationError("give --config RECIPE, or --method NAME with models") }
        if config == nil && models.isEmpty { throw ValidationError("name the models to merge") }
        if let dtype, DType(userName: dtype) == nil { throw ValidationError("unknown --dtype '\(dtype)' (use f32, f16 or bf16)") }
        if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)'") }
    }

    func run() throws {
        let (recipe, text) = try buildRecipe()
        var job = MergeJob(recipe: recipe, recipeText: text, output: output)
        job.outDType = dtype.flatMap { DType(userName: $0) }
        job.settings = common.settings(report: report, shardSize: shardSize)
        job.seed = seed
        job.dryRun = dryRun
        if let path {
            let parts = path.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 3, let a = Double(parts[0]), let b = Double(parts[1]), let n = Int(parts[2]), a.isFinite, b.isFinite,
                  (2...1000).contains(n) else {
                throw UsageError("--path expects START:STOP:COUNT (numbers, COUNT from 2 to 1000), e.g. 0:1:11")
            }
            job.path = MergeJob.pathPoints(start: a, stop: b, count: n)
        }
        let r = try job.run()
        for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
        if dryRun {
            printResolutions(r)
            printPlan(r)
            return
        }
        let s = Dictionary(uniqueKeysWithValues: r.summary)
        let t = Dictionary(uniqueKeysWithValues: r.timing)
        if let points = s["points"] {
            note("merged \(s["tensors"]?.compact() ?? "?") tensors with \(recipe.method) at \(points.compact()) points of the path, "
                 + "\(s["bytes_out"]?.compact() ?? "?") bytes, in \(t["merge_s"]?.compact() ?? "?") s -> \(output)", quiet: common.quiet)
            return
        }
        note("merged \(s["tensors"]!.compact()) tensors with \(recipe.method), \(s["bytes_out"]!.compact()) bytes, "
             + "in \(t["merge_s"]?.compact() ?? "?") s -> \(output)", quiet: common.quiet)
    }

    private func buildRecipe() throws -> (MergeRecipe, String) {
        if let config {
            let text = String(decoding: try FileSystem.readAll(config), as: UTF8.self)
            return (try MergeRecipe.load(yaml: text, path: config), text)
        }
        let n = models.count
        func list(_ s: String?, _ name: String) throws -> [Double]? {
            guard let s else { return nil }
            let v = s.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard v.allSatisfy({ $0 != nil }), v.count == 1 || v.count == n else {
                throw UsageError("--\(name): give one number, or one per model (\(n))")
            }
            return v.count == 1 ? Array(repeating: v[0]!, count: n) : v.map { $0! }
        }
        let lists = [("weight", try list(weight, "weight")), ("density", try list(density, "density")),
                     ("gamma", try list(gamma, "gamma")), ("epsilon", try list(epsilon, "epsilon"))]
        let sources = models.enumerated().map { i, m in
            MergeRecipe.Source(model: m, parameters: Dictionary(uniqueKeysWithValues: lists.compactMap { name, l in
                l.map { (name, ParameterSetting.scalar(.number($0[i]))) }
            }))
        }
        var globals: [String: ParameterSetting] = [:]
        for p in param {
            let kv = p.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, !kv[0].isEmpty else { throw UsageError("--param expects NAME=VALUE, got '\(p)'") }
            let v = kv[1]
            globals[kv[0]] = .scalar(v == "true" ? .bool(true) : v == "false" ? .bool(false) : Double(v).map { .number($0) } ?? .string(v))
        }
        let recipe = MergeRecipe(method: method!, baseModel: base, models: sources, parameters: globals)
        return (recipe, recipeYAML(recipe))
    }

    /// The flags as the equivalent mergekit recipe (saved beside the output).
    private func recipeYAML(_ r: MergeRecipe) -> String {
        func value(_ p: ParameterSetting) -> String {
            if case let .scalar(v) = p {
                if case let .string(s) = v { return "\"\(s)\"" }
                return v.description
            }
            return "null"
        }
        var y = "merge_method: \(r.method)\n"
        if let b = r.baseModel { y += "base_model: \"\(b)\"\n" }
        y += "models:\n"
        for s in r.models ?? [] {
            y += "  - model: \"\(s.model)\"\n"
            if !s.parameters.isEmpty {
                y += "    parameters: {" + s.parameters.sorted { $0.key < $1.key }.map { "\($0.key): \(value($0.value))" }.joined(separator: ", ") + "}\n"
            }
        }
        if !r.parameters.isEmpty {
            y += "parameters: {" + r.parameters.sorted { $0.key < $1.key }.map { "\($0.key): \(value($0.value))" }.joined(separator: ", ") + "}\n"
        }
        if let d = dtype { y += "out_dtype: \(d)\n" }
        return y
    }

    private func printResolutions(_ r: RunReport) {
        let params = Dictionary(uniqueKeysWithValues: r.parameters)
        for m in params["models"]?.arrayValue ?? [] {
            print("model \(m["reference"]!.stringValue!) -> \(m["path"]!.stringValue!) (\(m["resolved_against"]!.stringValue!))")
        }
    }

    private func printPlan(_ r: RunReport) {
        let rows = r.tensors
        print("plan: \(rows.count) output tensors")
        // A few examples with their resolved parameters: the first, a middle and the last.
        let picks = Array(Set([0, rows.count / 2, max(0, rows.count - 1)])).sorted().filter { $0 < rows.count }
        for i in picks { print(rows[i].compact()) }
        if case let .array(files)? = r.output["files"] { for f in files { print("would write \(f.stringValue!)") } }
        let s = Dictionary(uniqueKeysWithValues: r.summary)
        print("dry run: \(s["tensors"]!.compact()) tensors, \(s["bytes_out"]!.compact()) bytes in \(s["shards"]!.compact()) file(s); nothing written")
    }
}
