import ArgumentParser
import Linalg
import SafeTensors
import Surgery

struct LowRankCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lowrank-svd",
        abstract: "Low-rank views of weights: spectra and rank measures, low-rank compression.",
        discussion: """
        Works on the 2-D weights of the linear layers (--include/--exclude choose others), in f32 \
        from any storage dtype, with one SVD engine: exact (LAPACK gesdd) or randomized \
        (Halko-Martinsson-Tropp, Gaussian test matrix seeded by --seed and the tensor name). \
        Singular vectors are signed so that each left vector's largest entry is positive. \
        See wtool-lowrank-svd(1).
        """,
        subcommands: [Spectrum.self, Compress.self]
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

    struct Compress: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace each weight by its best rank-k approximation (or write the two factors).",
            discussion: """
            The rank: --rank R (at most R), --energy T (the smallest k keeping a fraction T of \
            sum sigma^2), --sv-ratio T (sigma > sigma_1 / T) or --sv-epsilon E (sigma > E). Same names, \
            shapes and dtype; with --factored (needs --rank) <name>.left = U_k diag(sigma) [out, k] and \
            <name>.right = V_k^T [k, in] instead. --svd auto (default) is randomized when the rank is \
            fixed and at most a quarter of the smaller dimension, exact otherwise. The report gives each \
            tensor's rank and why, the energy kept, the measured relative Frobenius error and sizes.
            """)
        @Argument(help: ArgumentHelp("A .safetensors file or a model folder.", valueName: "IN")) var input: String
        @Option(name: .short, help: ArgumentHelp("Output: a .safetensors file or a folder.", valueName: "OUT")) var output: String
        @Option(name: .long, help: ArgumentHelp("Keep at most R singular triplets.", valueName: "R")) var rank: Int?
        @Option(name: .long, help: ArgumentHelp("Keep this fraction of the energy.", valueName: "T")) var energy: Double?
        @Option(name: .long, help: ArgumentHelp("Keep sigma > sigma_1 / T.", valueName: "T")) var svRatio: Double?
        @Option(name: .long, help: ArgumentHelp("Keep sigma > E.", valueName: "E")) var svEpsilon: Double?
        @Flag(name: .long, help: "Write the two factors instead of the product.") var factored = false
        @Option(name: .long, help: ArgumentHelp("auto (default), exact or randomized.", valueName: "METHOD")) var svd: String = "auto"
        @Option(name: .long, help: ArgumentHelp("Randomized: extra columns (default 10).", valueName: "P")) var oversample: Int = 10
        @Option(name: .long, help: ArgumentHelp("Randomized: power iterations (default 2).", valueName: "Q")) var powerIters: Int = 2
        @Option(name: .long, help: ArgumentHelp("Randomized: seed (default 0).", valueName: "N")) var seed: UInt64 = 0
        @Option(name: .long, help: ArgumentHelp("Largest shard (folder output).", valueName: "SIZE")) var shardSize: String?
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here.", valueName: "FILE")) var report: String?
        @OptionGroup var common: CommonOptions

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
            guard svd == "auto" || TruncatedSVD.Method(rawValue: svd) != nil else { throw ValidationError("--svd must be auto, exact or randomized") }
            guard oversample >= 0, powerIters >= 0 else { throw ValidationError("--oversample and --power-iters must be >= 0") }
            if let shardSize, ByteSize.parse(shardSize) == nil { throw ValidationError("invalid --shard-size '\(shardSize)'") }
        }

        func run() throws {
            var job = CompressJob(input: input, output: output)
            job.policy = policy!
            job.factored = factored
            job.method = TruncatedSVD.Method(rawValue: svd)
            job.oversample = oversample
            job.powerIterations = powerIters
            job.seed = seed
            job.settings = common.settings(report: report, shardSize: shardSize)
            let r = try job.run()
            let s = Dictionary(uniqueKeysWithValues: r.summary)
            note("compressed \(s["targets"]!.compact()) tensors: \(s["bytes_before"]!.compact()) -> \(s["bytes_after"]!.compact()) bytes -> \(output)", quiet: common.quiet)
        }
    }
}
