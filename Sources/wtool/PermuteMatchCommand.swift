import ArgumentParser
import SafeTensors
import Surgery

struct PermuteMatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "permute-match",
        abstract: "Align B's hidden units to a reference A (Git Re-Basin weight matching) before merging.",
        discussion: """
        Finds the permutations of B's hidden units that bring B closest to A (maximise \
        sum <A, pi(B)>: coordinate descent over the spec's spaces in a seeded order, one exact \
        linear assignment per step (Jonker-Volgenant, f64), until a sweep changes nothing) and \
        writes B re-indexed: pure gathers in B's dtype, so OUT computes exactly B's function. Then \
        `wtool merge` A and OUT. Cost terms that read no other permutation (input and output \
        layers, embeddings and head) are computed once and kept (up to 1 GiB).

        The spec says which permutation acts on which tensor axis. --spec auto infers it: MLP \
        chains (layers.N.weight/bias and similar), and from config.json the LLaMA family (llama, \
        mistral, qwen2: one residual space, MLP space per layer, KV groups, query heads inside a \
        group, V/O dims inside a head; never Q/K dims under RoPE), GPT-2 and BERT/RoBERTa. \
        --spec FILE reads a JSON or YAML spec (format in wtool-permute-match(1)); for a model \
        wtool knows, its permutations are checked to be symmetries of the model.

        --apply P.json applies permutations saved by --perm-out to B or to any checkpoint of B's \
        architecture (a fine-tune of B). --self-test permutes the model randomly by its spec and \
        requires matching to undo it bit for bit. --verify (MLP chains) runs B and OUT on random \
        inputs and fails unless the logits agree. The report gives per space its size, steps, \
        gains and fraction of units moved; L2 distance and objective before and after; seconds \
        spent building costs and in the LAP.
        """
    )

    @Argument(help: ArgumentHelp("B: the model to re-index (a .safetensors file or a model folder).", valueName: "B"))
    var model: String?

    @Option(name: .long, help: ArgumentHelp("A: the model to align B to.", valueName: "A"))
    var reference: String?

    @Option(name: .short, help: ArgumentHelp("Output: a .safetensors file or a folder.", valueName: "OUT"))
    var output: String?

    @Option(name: .long, help: ArgumentHelp("auto (infer from names and config.json) or a JSON/YAML spec file.", valueName: "auto|FILE"))
    var spec = "auto"

    @Option(name: .long, help: ArgumentHelp("Seeds the order in which spaces are visited (and the self-test's permutation).", valueName: "N"))
    var seed: UInt64 = 0

    @Option(name: .long, help: ArgumentHelp("Most coordinate-descent sweeps (default 100).", valueName: "N"))
    var maxSweeps = 100

    @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE"))
    var report: String?

    @Option(name: .long, help: ArgumentHelp("Save the permutations (with their spec) for --apply.", valueName: "P.json"))
    var permOut: String?

    @Option(name: .long, help: ArgumentHelp("Apply saved permutations to B instead of matching.", valueName: "P.json"))
    var apply: String?

    @Flag(name: .long, help: "Print the spec (inferred or read) as JSON and exit.")
    var printSpec = false

    @Flag(name: .long, help: "MLP chains: compare B's and OUT's logits on seeded random inputs.")
    var verify = false

    @Flag(name: .long, help: "Permute B randomly by its spec, match it back, require it bit for bit (writes only --report).")
    var selfTest = false

    @Option(name: .long, help: .hidden)
    var solveLap: String?

    @Option(name: .long, help: ArgumentHelp("Largest shard, e.g. 5GB (folder output only).", valueName: "SIZE"))
    var shardSize: String?

    @OptionGroup var common: CommonOptions

    func validate() throws {
        if !common.include.isEmpty || !common.exclude.isEmpty {
            throw ValidationError("--include/--exclude do not apply: every tensor of B is re-indexed by the spec (list pass-through tensors in its \"fixed\")")
        }
        if maxSweeps < 1 { throw ValidationError("--max-sweeps must be at least 1") }
        if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)' (examples: 500MB, 5GB)") }
        if solveLap == nil && model == nil { throw ValidationError("missing B, the model to re-index") }
        if printSpec || selfTest || solveLap != nil {
            if output != nil { throw ValidationError("-o is not used with \(printSpec ? "--print-spec" : selfTest ? "--self-test" : "--solve-lap")") }
            if printSpec && selfTest { throw ValidationError("--print-spec and --self-test are separate runs") }
            return
        }
        guard output != nil else { throw ValidationError("missing -o OUT") }
        if apply != nil {
            if reference != nil { throw ValidationError("--apply takes no --reference: it applies saved permutations without matching") }
            if spec != "auto" { throw ValidationError("--apply uses the spec saved in P.json; drop --spec") }
        } else if reference == nil {
            throw ValidationError("missing --reference A (or --apply P.json)")
        }
    }

    func run() throws {
        if let solveLap {
            for row in try LAPDiagnostic.solve(file: solveLap, threads: common.threadCount) { print(row.compact()) }
            return
        }
        var job = PermuteMatchJob(model: model!)
        job.settings = common.settings(report: report, shardSize: shardSize)
        job.reference = reference
        job.output = output
        job.specPath = spec == "auto" ? nil : spec
        job.seed = seed
        job.maxSweeps = maxSweeps
        job.permOut = permOut
        job.apply = apply
        job.verify = verify
        if printSpec {
            print(try job.printSpec())
            return
        }
        let r = selfTest ? try job.selfTest() : try job.run()
        for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
        let s = Dictionary(uniqueKeysWithValues: r.summary)
        let t = Dictionary(uniqueKeysWithValues: r.timing)
        if selfTest {
            note("self-test: \(s["architecture"]!.stringValue!) spec, \(s["spaces"]!.compact()) spaces, planted permutation recovered "
                 + "bit for bit in \(s["sweeps"]!.compact()) sweep(s)", quiet: common.quiet)
        } else if apply != nil {
            note("applied \(s["spaces"]!.compact()) permutations -> \(output!)", quiet: common.quiet)
        } else {
            note("matched \(s["spaces"]!.compact()) spaces (\(s["architecture"]!.stringValue!) spec) in \(s["sweeps"]!.compact()) sweep(s): "
                 + "L2 to A \(s["l2_before"]!.compact()) -> \(s["l2_after"]!.compact()), cost \(t["cost_s"]!.compact()) s, "
                 + "LAP \(t["lap_s"]!.compact()) s -> \(output!)", quiet: common.quiet)
            if let d = s["verify_max_abs_logit_difference"] { note("verify: max |logit(B) - logit(OUT)| = \(d.compact())", quiet: common.quiet) }
        }
    }
}
