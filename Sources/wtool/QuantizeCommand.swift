import ArgumentParser
import SafeTensors
import Surgery

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quantize",
        abstract: "Calibration-free quantization to GGUF (llama.cpp), compressed-tensors (vLLM) or fake-quantized safetensors.",
        discussion: """
        Schemes: q8_0 q4_0 q4_1 q5_0 q5_1 tq1_0 tq2_0 q2_k q3_k q4_k q5_k q6_k (llama.cpp blocks, \
        bit-exact with ggml's reference encoders; --format gguf or fake; --imatrix FILE weights the \
        searches as ggml does), with --llama-cpp the llama-quantize file types q2_k q3_k_s q3_k_m \
        q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k q8_0 q4_0 q4_1 q5_0 q5_1 (a type per tensor by \
        llama.cpp's rules, token_embd and output included; the report names each rule), f32 f16 bf16 (a float GGUF: every \
        matrix, embeddings and head included, in that type, what llama-quantize takes), int2...int8 (round to nearest, \
        compressed-tensors conventions), hqq2...hqq8 (HQQ's zero points, then optimised under the \
        format's integer zero points; fake output is what compressed-tensors decodes), ternary and \
        ternary-median (BitNet b1.58 absmean / median scale), fp8 (E4M3), statsq2...statsq4 (OFQ's \
        StatsQ: 2^b mid-rise levels per row scaled by 2 mean|W|; its SQNR beside min-max RTN's in the \
        report; stored as (b+1)-bit odd ints in compressed-tensors); the last five write \
        --format compressed-tensors or fake.

        By default the 2-D weight matrices are quantized; embeddings, lm_head, norms and biases are \
        kept (--include replaces that set, --exclude removes from it). A matrix whose input \
        dimension does not divide into blocks/groups is kept and listed in the report.

        --llama-cpp writes what convert_hf_to_gguf writes for llama/mistral/qwen2/qwen3 folders: \
        llama.cpp names, hyper-parameters from either config layout (a missing one is an error), \
        RoPE scaling (linear, yarn, longrope keys; llama3's rope_freqs tensor), the Q/K row order, \
        norms and vectors in F32, and the tokenizer: SentencePiece from tokenizer.model, else \
        byte-level BPE from tokenizer.json with its pre-tokenizer recognised by structure (gpt-2, \
        starcoder/smollm, llama-bpe/dbrx, qwen2, tekken, gpt-4o, deepseek-v3, falcon; another is an \
        error), special ids, add_bos/add_eos and the chat template. --tokenizer none omits it.

        --dequantize IN -o OUT turns a GGUF or compressed-tensors checkpoint written by wtool back \
        into float safetensors. The report gives per tensor: bits per weight including scales, \
        bytes, MSE, relative Frobenius error, SQNR (dB), max abs error; HQQ also asymmetric RTN's; \
        its timing, the quantizer kernels' own seconds and MB/s per thread (encode_thread_s: the \
        block encoders, or RTN's codes, packing, decoding and error). \
        compressed-tensors output ignores lm_head (also when it is tied to the embeddings) unless it \
        was quantized. Asymmetric pack-quantized output (int --asymmetric, hqq) loads in vLLM and \
        compressed-tensors, not in transformers 5.x (a warning says so).
        """
    )

    @Argument(help: ArgumentHelp("A .safetensors file or a model folder (with --dequantize: a .gguf file or a compressed-tensors checkpoint).", valueName: "IN"))
    var input: String

    @Option(name: .short, help: ArgumentHelp("Output: NAME.gguf, a .safetensors file or a folder.", valueName: "OUT"))
    var output: String

    @Option(name: .long, help: ArgumentHelp("q8_0, q4_0, q4_1, q5_0, q5_1, tq1_0, tq2_0, q2_k...q6_k, f32, f16, bf16, with --llama-cpp q4_k_m and the other llama-quantize types, int8...int2, hqq8...hqq2, ternary, ternary-median, fp8, statsq4...statsq2.", valueName: "SCHEME"))
    var scheme: String?

    @Option(name: .long, help: ArgumentHelp("gguf, compressed-tensors or fake (default: gguf for llama.cpp schemes, else compressed-tensors).", valueName: "FORMAT"))
    var format: String?

    @Option(name: .long, help: ArgumentHelp("tensor, channel or group (int/hqq/fp8 schemes; default group for int/hqq, channel for fp8).", valueName: "G"))
    var granularity: String?

    @Option(name: .long, help: ArgumentHelp("Input elements per group, with group granularity (default 128).", valueName: "N"))
    var groupSize: Int?

    @Flag(name: .long, help: "Symmetric integers, zero point 0 (default for int2...int8).")
    var symmetric = false

    @Flag(name: .long, help: "Asymmetric integers with a zero point per group.")
    var asymmetric = false

    @Flag(name: .long, help: "GGUF for llama.cpp, as convert_hf_to_gguf writes it: tensor names, hyper-parameters, Q/K order, tokenizer and chat template (llama, mistral, qwen2, qwen3 folders).")
    var llamaCpp = false

    @Option(name: .long, help: ArgumentHelp("With --llama-cpp: auto (the folder's tokenizer.model or tokenizer.json, default) or none (a GGUF that runs on token ids only).", valueName: "SOURCE"))
    var tokenizer: String?

    @Option(name: .long, help: ArgumentHelp("A llama.cpp importance matrix (imatrix GGUF or legacy .dat) weighting the block searches as ggml does (llama.cpp block schemes and mixes).", valueName: "FILE"))
    var imatrix: String?

    @Flag(name: .long, help: "Turn a GGUF or compressed-tensors checkpoint back into float safetensors.")
    var dequantize = false

    @Option(name: .long, help: ArgumentHelp("With --dequantize: output float dtype (default: the scales' dtype, f32 for GGUF).", valueName: "DTYPE"))
    var dtype: String?

    @Option(name: .long, help: ArgumentHelp("Largest shard, e.g. 5GB (folder output only).", valueName: "SIZE"))
    var shardSize: String?

    @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE"))
    var report: String?

    @OptionGroup var common: CommonOptions

    func validate() throws {
        if dequantize {
            if scheme != nil || format != nil || granularity != nil || groupSize != nil || symmetric || asymmetric || llamaCpp || tokenizer != nil || imatrix != nil {
                throw ValidationError("--dequantize takes no quantization options (only -o, --dtype, --shard-size, --report)")
            }
            if !common.include.isEmpty || !common.exclude.isEmpty {
                throw ValidationError("--dequantize decodes every quantized tensor; it takes no --include/--exclude")
            }
            if let dtype, DType(userName: dtype)?.isFloatingPoint != true { throw ValidationError("unknown --dtype '\(dtype)' (use f32, f16 or bf16)") }
            return
        }
        guard let scheme else { throw ValidationError("--scheme is required (or --dequantize)") }
        guard QuantScheme.parse(scheme) != nil else { throw ValidationError("unknown --scheme '\(scheme)' (use one of \(QuantScheme.names.joined(separator: ", ")))") }
        if let format, QuantFormat(rawValue: format) == nil { throw ValidationError("unknown --format '\(format)' (use gguf, compressed-tensors or fake)") }
        if let granularity, !["tensor", "channel", "group"].contains(granularity) { throw ValidationError("unknown --granularity '\(granularity)' (use tensor, channel or group)") }
        if symmetric && asymmetric { throw ValidationError("--symmetric and --asymmetric exclude each other") }
        if let groupSize, groupSize < 1 { throw ValidationError("--group-size must be at least 1") }
        if dtype != nil { throw ValidationError("--dtype applies to --dequantize") }
        if let tokenizer {
            guard ["auto", "none"].contains(tokenizer) else { throw ValidationError("unknown --tokenizer '\(tokenizer)' (use auto or none)") }
            if !llamaCpp { throw ValidationError("--tokenizer applies to --llama-cpp") }
        }
        if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)' (examples: 500MB, 5GB)") }
    }

    func run() throws {
        if dequantize {
            var job = DequantizeJob(input: input, output: output)
            job.dtype = dtype.flatMap { DType(userName: $0) }
            job.settings = common.settings(report: report, shardSize: shardSize)
            let r = try job.run()
            let s = Dictionary(uniqueKeysWithValues: r.summary)
            note("dequantized \(s["dequantized"]!.compact()) of \(s["tensors"]!.compact()) tensors -> \(output)", quiet: common.quiet)
            return
        }
        let parsed = QuantScheme.parse(scheme!)!
        let fmt = format.flatMap { QuantFormat(rawValue: $0) } ?? (parsed.formats.contains(.gguf) ? .gguf : .compressedTensors)
        var job = QuantizeJob(input: input, output: output, scheme: parsed, format: fmt)
        switch granularity {
        case "tensor"?: job.granularity = .tensor
        case "channel"?: job.granularity = .channel
        case "group"?: job.granularity = .group(groupSize ?? 128)
        default: break
        }
        job.groupSize = groupSize
        job.symmetric = symmetric ? true : (asymmetric ? false : nil)
        job.llamaCpp = llamaCpp
        job.withTokenizer = tokenizer != "none"
        job.imatrixPath = imatrix
        job.settings = common.settings(report: report, shardSize: shardSize)
        let r = try job.run()
        for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
        let s = Dictionary(uniqueKeysWithValues: r.summary)
        let t = Dictionary(uniqueKeysWithValues: r.timing)
        note("quantized \(s["quantized"]!.compact()) of \(s["tensors"]!.compact()) tensors (\(parsed.name), \(fmt.rawValue)), "
             + "\(s["bits_per_weight"]?.compact() ?? "-") bits/weight, SQNR \(s["sqnr_db"]?.compact() ?? "inf") dB, "
             + "\(s["bytes_out"]!.compact()) bytes in \(t["quantize_s"]!.compact()) s -> \(output)", quiet: common.quiet)
    }
}
