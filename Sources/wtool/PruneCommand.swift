import ArgumentParser
import SafeTensors
import Surgery

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune-sparse",
        abstract: "Zero the weights a rule scores lowest (magnitude, Wanda, principal, soft-threshold; N:M).",
        discussion: """
        Targets: the 2-D weights of the linear layers inside the blocks (embeddings, lm_head, norms \
        and biases are copied byte for byte; --include/--exclude choose others). Kept entries keep \
        their exact bytes, pruned ones become +0.0, the dtype is kept. Scores: magnitude |w|; wanda \
        |w_ij| * ||X_j|| from --stats (a safetensors file of <module>.act_sq_sum, Σx² per input \
        channel; only ratios matter); principal |W_R_ij| of the rank-R approximation (exact SVD); \
        soft-threshold: one global t, w -> sign(w) * max(|w| - t, 0). Counts are exact: --scope \
        tensor prunes floor(numel * S) per tensor, row floor(cols * S) per row, global floor(total * \
        S) over all targets; --nm N:M keeps the N largest of every M consecutive entries of each \
        row. The default scope is each method's own comparison group: row for wanda and DSnoT (as \
        the Wanda authors' prune_wanda), global for soft-threshold, tensor for magnitude and \
        principal. Ties are pruned lower index first. --method structured removes whole units and \
        rewrites config.json: --target mlp (channels), heads (KV groups), hidden (residual channels \
        everywhere: embeddings, norms, projections, lm_head; head_dim kept) or layers (whole blocks, \
        --layers 3,7-9 or the lowest-scoring; renumbered); --select auto|stats|norm|uniform chooses \
        the units. See wtool-prune-sparse(1).
        """
    )

    @Argument(help: ArgumentHelp("A .safetensors file or a model folder.", valueName: "IN")) var input: String
    @Option(name: .short, help: ArgumentHelp("Output: a .safetensors file or a folder.", valueName: "OUT")) var output: String
    @Option(name: .long, help: ArgumentHelp("magnitude (default), wanda, principal, soft-threshold or structured.", valueName: "METHOD")) var method: String = "magnitude"
    @Option(name: .long, help: ArgumentHelp("structured: mlp (channels), heads (KV groups), hidden (residual channels) or layers (whole blocks).", valueName: "TARGET")) var target: String?
    @Option(name: .long, help: ArgumentHelp("structured: how units are chosen: auto (default: stats if --stats, else norm), stats, norm or uniform (evenly spaced).", valueName: "RULE")) var select: String?
    @Option(name: .long, help: ArgumentHelp("structured --target layers: the layers to remove, e.g. 3,7-9.", valueName: "LIST")) var layers: String?
    @Option(name: .long, help: ArgumentHelp("Fraction to prune, 0...1 (default 0.5; not with --nm, which prunes (M-N)/M).", valueName: "S")) var sparsity: Double?
    @Option(name: .long, help: ArgumentHelp("tensor, row or global (default: row for wanda and --dsnot, global for soft-threshold, else tensor).", valueName: "SCOPE")) var scope: String?
    @Option(name: .long, help: ArgumentHelp("Keep N of every M consecutive entries per row (2:4, 4:8).", valueName: "N:M")) var nm: String?
    @Option(name: .long, help: ArgumentHelp("Activation statistics for wanda (safetensors, <module>.act_sq_sum).", valueName: "FILE")) var stats: String?
    @Option(name: .long, help: ArgumentHelp("Score targets without statistics by magnitude instead of failing.", valueName: "magnitude")) var fallback: String?
    @Option(name: .long, help: ArgumentHelp("Rank of the approximation for principal.", valueName: "R")) var rank: Int?
    @Option(name: .long, help: ArgumentHelp("Also write one BOOL mask per target (true = kept) to this .safetensors file.", valueName: "FILE")) var maskOut: String?
    @Flag(name: .long, help: "DSnoT prune-and-grow on top of the wanda or magnitude mask (needs act_mean and act_var statistics).") var dsnot = false
    @Option(name: .long, help: ArgumentHelp("DSnoT: swaps per row at most (default 50).", valueName: "N")) var dsnotCycles: Int?
    @Option(name: .long, help: ArgumentHelp("DSnoT: stop when the row's expected error is this small (default 0.1).", valueName: "X")) var dsnotThreshold: Double?
    @Option(name: .long, help: ArgumentHelp("Largest shard (folder output).", valueName: "SIZE")) var shardSize: String?
    @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE")) var report: String?
    @OptionGroup(title: "Principal pruning's SVD") var svd: SVDOptions
    @OptionGroup var common: CommonOptions

    func parsedNM() -> (n: Int, m: Int)? {
        guard let nm else { return nil }
        let p = nm.split(separator: ":").compactMap { Int($0) }
        return p.count == 2 ? (p[0], p[1]) : nil
    }

    func validate() throws {
        guard PruneJob.Method(rawValue: method) != nil || method == "structured" else {
            throw ValidationError("--method must be magnitude, wanda, principal, soft-threshold or structured")
        }
        if let target, StructuredPruneJob.Target(rawValue: target) == nil { throw ValidationError("--target must be mlp, heads, hidden or layers") }
        if let select, StructuredPruneJob.Selection(rawValue: select) == nil { throw ValidationError("--select must be auto, stats, norm or uniform") }
        if method != "structured" && (select != nil || layers != nil) { throw ValidationError("--select and --layers belong to --method structured") }
        if layers != nil && target != "layers" { throw ValidationError("--layers belongs to --target layers") }
        if layers != nil && sparsity != nil { throw ValidationError("--layers names the layers to remove; do not give --sparsity too") }
        if method == "structured" && (nm != nil || scope != nil || maskOut != nil || rank != nil || dsnot || fallback != nil
                                      || !common.include.isEmpty || !common.exclude.isEmpty) {
            throw ValidationError("structured pruning takes --target, --sparsity and --stats (no --nm, --scope, --rank, --mask-out, --dsnot, --fallback, --include/--exclude: it removes the same units in every layer)")
        }
        if method != "structured" && target != nil { throw ValidationError("--target belongs to --method structured") }
        if method != "wanda" && fallback != nil { throw ValidationError("--fallback belongs to --method wanda") }
        if !dsnot && (dsnotCycles != nil || dsnotThreshold != nil) { throw ValidationError("--dsnot-cycles and --dsnot-threshold need --dsnot") }
        if rank != nil && method != "principal" { throw ValidationError("--rank belongs to --method principal") }
        if let scope, PruneJob.Scope(rawValue: scope) == nil { throw ValidationError("--scope must be tensor, row or global") }
        guard (0...1).contains(sparsity ?? 0.5) else { throw ValidationError("--sparsity must be in [0, 1]") }
        if nm != nil && sparsity != nil { throw ValidationError("--nm N:M sets the sparsity ((M-N)/M); give one of --nm and --sparsity") }
        if nm != nil {
            guard let p = parsedNM(), p.m >= 1, p.n >= 0, p.n <= p.m else { throw ValidationError("--nm expects N:M with 0 <= N <= M, e.g. 2:4") }
        }
        if method != "principal" && !svd.isDefault { throw ValidationError("--svd, --oversample, --power-iters and --seed belong to --method principal") }
        if let fallback, fallback != "magnitude" { throw ValidationError("--fallback takes only 'magnitude'") }
        if let rank, rank < 1 { throw ValidationError("--rank must be at least 1") }
        if (dsnotCycles ?? 0) < 0 || !((dsnotThreshold ?? 0) >= 0) { throw ValidationError("--dsnot-cycles and --dsnot-threshold must be >= 0") }
        if let maskOut, !maskOut.hasSuffix(".safetensors") { throw ValidationError("--mask-out must name a .safetensors file") }
        if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)'") }
    }

    func run() throws {
        if method == "structured" { return try runStructured() }
        var job = PruneJob(input: input, output: output)
        job.method = PruneJob.Method(rawValue: method)!
        job.sparsity = sparsity ?? 0.5
        job.scope = scope.flatMap { PruneJob.Scope(rawValue: $0) }
        job.nm = parsedNM()
        job.statsPath = stats
        job.fallbackMagnitude = fallback == "magnitude"
        job.rank = rank
        job.svd = svd.choice
        job.maskOut = maskOut
        if dsnot {
            var d = DSnoT()
            if let dsnotCycles { d.maxCycles = dsnotCycles }
            if let dsnotThreshold { d.threshold = dsnotThreshold }
            job.dsnot = d
        }
        job.settings = common.settings(report: report, shardSize: shardSize)
        let r = try job.run()
        for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
        let s = Dictionary(uniqueKeysWithValues: r.summary)
        note("pruned \(s["pruned"]!.compact()) weights in \(s["targets"]!.compact()) tensors (sparsity \(formatFixed(s["achieved_sparsity"]!.doubleValue ?? 0, 4))) -> \(output)",
             quiet: common.quiet)
    }

    private func runStructured() throws {
        var job = StructuredPruneJob(input: input, output: output)
        job.target = StructuredPruneJob.Target(rawValue: target ?? "mlp")!
        job.sparsity = sparsity ?? (job.target == .layers || job.target == .hidden ? 0.25 : 0.5)
        job.statsPath = stats
        job.select = select.flatMap { StructuredPruneJob.Selection(rawValue: $0) } ?? .auto
        if let layers {
            var list: [Int] = []
            for part in layers.split(separator: ",") {
                let ends = part.split(separator: "-", maxSplits: 1).map { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard ends.allSatisfy({ $0 != nil }), let a = ends.first!, let b = ends.last!, a <= b else {
                    throw UsageError("--layers expects indices and ranges like 3,7-9, got '\(part)'")
                }
                list += Array(a...b)
            }
            job.layerList = list
        }
        job.settings = common.settings(report: report, shardSize: shardSize)
        let r = try job.run()
        for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
        let s = Dictionary(uniqueKeysWithValues: r.summary)
        if job.target == .layers || job.target == .hidden {
            let what = job.target == .layers ? "layers \(s["layers"]?.compact() ?? "?") -> \(s["layers_out"]?.compact() ?? "?")"
                : "hidden_size \(s["hidden_size"]?.compact() ?? "?") -> \(s["hidden_size_out"]?.compact() ?? "?")"
            note("shrank \(what), \(s["bytes_in"]?.compact() ?? "?") -> \(s["bytes_out"]?.compact() ?? "?") bytes -> \(output)", quiet: common.quiet)
            return
        }
        note("removed \(s["removed_per_layer"]!.compact()) of \(s["units"]!.compact()) \(job.target == .mlp ? "MLP channels" : "KV groups") in each of \(s["layers"]!.compact()) layers, "
             + "\(s["bytes_in"]!.compact()) -> \(s["bytes_out"]!.compact()) bytes -> \(output)", quiet: common.quiet)
    }
}
