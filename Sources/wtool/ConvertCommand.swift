import ArgumentParser
import SafeTensors
import Surgery

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Re-write a checkpoint: file <-> folder, re-shard, change the float dtype.",
        discussion: """
        --dtype converts floating-point tensors (F64, F32, F16, BF16, F8) through f32 with \
        round-to-nearest-even; NaN stays NaN. Integer and BOOL tensors, and tensors left out by \
        --include/--exclude, are copied bit for bit. --shard-size splits a folder output into \
        model-0000k-of-0000n.safetensors plus model.safetensors.index.json, like Hugging Face \
        (decimal units: 500MB, 5GB; binary with GiB/MiB). Config and tokenizer files are copied \
        from an input folder to an output folder. The report (default OUT/wtool-report.json, or \
        OUT.report.json beside a file) gives each tensor's rounding error.

        IN may be a PyTorch pytorch_model.bin (or a folder of .bin shards): its pickle is read \
        without executing anything, and any global that is not a tensor type is refused by name.

        IN may be a llama.cpp GGUF (llama/mistral, qwen2, qwen3): OUT is then a Hugging Face \
        folder: every tensor dequantized, renamed and its Q/K rows un-permuted, config.json from \
        the hyper-parameters, tokenizer.json + tokenizer_config.json from a byte-level BPE \
        vocabulary (tokenizer.model from a SentencePiece one). --dtype f32|f16|bf16 (default: the 2-D tensors' float type, else f32).
        """
    )

    @Argument(help: ArgumentHelp("A .safetensors file, a model folder, a pytorch_model.bin, or a GGUF.", valueName: "IN"))
    var input: String

    @Option(name: .short, help: ArgumentHelp("Output: a .safetensors file or a folder.", valueName: "OUT"))
    var output: String

    @Option(name: .long, help: ArgumentHelp("Target dtype for float tensors: f32, f16, bf16 (also f64, f8_e4m3, f8_e5m2).", valueName: "DTYPE"))
    var dtype: String?

    @Option(name: .long, help: ArgumentHelp("Largest shard, e.g. 500MB, 5GB (folder output only).", valueName: "SIZE"))
    var shardSize: String?

    @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE"))
    var report: String?

    @Flag(name: .long, help: "Validate and print the plan (tensors, dtypes, files) without writing anything.")
    var dryRun = false

    @OptionGroup var common: CommonOptions

    func validate() throws {
        if let dtype, DType(userName: dtype) == nil { throw ValidationError("unknown --dtype '\(dtype)' (use f32, f16 or bf16)") }
        if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)' (examples: 500MB, 5GB)") }
        if shardSize != nil && output.hasSuffix(".safetensors") {
            throw ValidationError("--shard-size needs a folder as output, not a .safetensors file")
        }
    }

    func run() throws {
        var job = ConvertJob(input: input, output: output)
        job.dtype = dtype.flatMap { DType(userName: $0) }
        job.settings = common.settings(report: report, shardSize: shardSize)
        job.dryRun = dryRun
        let r = try job.run()
        if dryRun {
            printPlan(r)
            return
        }
        for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
        let s = Dictionary(uniqueKeysWithValues: r.summary)
        let t = Dictionary(uniqueKeysWithValues: r.timing)
        note("converted \(s["converted"]!.compact()) of \(s["tensors"]!.compact()) tensors into \(s["shards"]!.compact()) file(s), "
             + "\(s["bytes_out"]!.compact()) bytes, in \(t["convert_s"]!.compact()) s -> \(output)", quiet: common.quiet)
    }

    private func printPlan(_ r: RunReport) {
        for case let .object(row) in r.tensors {
            let f = Dictionary(uniqueKeysWithValues: row)
            print("\(f["name"]!.stringValue!)  \(f["dtype_in"]!.stringValue!) -> \(f["dtype_out"]!.stringValue!)  \(f["shape"]!.compact())  \(f["bytes_out"]!.compact()) bytes")
        }
        if case let .array(files)? = Dictionary(uniqueKeysWithValues: r.output.objectValue ?? [])["files"] {
            for file in files { print("would write \(file.stringValue!)") }
        }
        let s = Dictionary(uniqueKeysWithValues: r.summary)
        print("dry run: \(s["tensors"]!.compact()) tensors, \(s["converted"]!.compact()) converted, \(s["bytes_out"]!.compact()) bytes in \(s["shards"]!.compact()) file(s); nothing written")
    }
}
