import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import Surgery
import SafeTensors

struct Wtool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wtool",
        abstract: "Surgery on neural-network checkpoints (safetensors files and Hugging Face folders).",
        discussion: """
        Inputs are .safetensors files or model folders (model.safetensors, or shards with \
        model.safetensors.index.json). -o OUT is a .safetensors file or a folder. Values are computed \
        in f32 (sums and norms in f64) whatever the storage dtype.

        Exit status: 0 done; 1 a run-time failure (bad input file, mismatched shapes, I/O error); \
        2 a usage error (bad flags). `wtool diff` exits 1 when the checkpoints differ and 2 on any \
        error; `task-vector audit --fail-above S` exits 3 when a finding scores above S. See wtool(1) \
        and wtool-<command>(1).
        """,
        version: wtoolVersion,
        subcommands: [InspectCommand.self, DiffCommand.self, ConvertCommand.self, MergeCommand.self, TaskVectorCommand.self, PruneCommand.self, LowRankCommand.self, QuantizeCommand.self, PermuteMatchCommand.self, IndexCommand.self]
    )
}

/// Options every command shares.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Worker threads (default: all cores).", valueName: "N"))
    var threads: Int?

    @Flag(name: .long, help: "No summary and no progress on stderr.")
    var quiet = false

    @Option(name: .long, help: ArgumentHelp("Only tensors matching this glob (repeatable).", valueName: "GLOB"))
    var include: [String] = []

    @Option(name: .long, help: ArgumentHelp("Skip tensors matching this glob (repeatable).", valueName: "GLOB"))
    var exclude: [String] = []

    @Option(name: .long, help: ArgumentHelp("Compute and write only part I of N of a sharded folder output (needs --shard-size); 'wtool index OUT' completes it.", valueName: "I/N"))
    var part: String?

    /// Commands that write no checkpoint refuse --part rather than ignore it.
    func refusePart(_ command: String) throws {
        if part != nil { throw ValidationError("--part splits the shards a writing command produces; \(command) writes none") }
    }

    /// --part I/N, 1 <= I <= N.
    var outputPart: OutputPart? {
        guard let part else { return nil }
        let f = part.split(separator: "/").map { Int($0) }
        guard f.count == 2, let i = f[0], let n = f[1], n >= 1, (1...n).contains(i) else { return nil }
        return OutputPart(index: i, count: n)
    }

    var selection: TensorSelection { TensorSelection(include: include, exclude: exclude) }
    var threadCount: Int { threads ?? Engine.defaultThreads }

    /// The settings every job takes, from these options and the command's own.
    func settings(report: String? = nil, shardSize: String? = nil) -> JobSettings {
        var s = JobSettings()
        s.threads = threadCount
        s.quiet = quiet
        s.command = CommandLine.arguments
        s.provenance = provenance()
        s.reportPath = report
        s.shardSize = shardSize.flatMap { ByteSize.parse($0) }
        s.selection = selection
        if let n = blockAboveOverride { s.blockAbove = n }
        s.part = outputPart
        return s
    }

    /// WTOOL_BLOCK_ABOVE: tensors with more entries are merged in row blocks (see JobSettings).
    var blockAboveOverride: Int? {
        guard let v = getenv("WTOOL_BLOCK_ABOVE") else { return nil }
        return Int(String(cString: v))
    }

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if part != nil && outputPart == nil { throw ValidationError("--part expects I/N with 1 <= I <= N, e.g. 2/4") }
        if getenv("WTOOL_BLOCK_ABOVE") != nil, (blockAboveOverride ?? 0) < 1 {
            throw ValidationError("WTOOL_BLOCK_ABOVE must be a positive number of tensor entries")
        }
    }
}

/// The command as recorded in an output's metadata: argv without the options that cannot change
/// the output's bytes, so the same job run with other threads or paths writes identical files.
func provenance(_ argv: [String] = CommandLine.arguments) -> String {
    let dropWithValue: Set<String> = ["-o", "--output", "--threads", "--report", "--part"]
    let dropAlone: Set<String> = ["--quiet"]
    var out = ["wtool"]
    var i = 1
    while i < argv.count {
        let a = argv[i]
        if dropWithValue.contains(a) { i += 2; continue }
        if dropAlone.contains(a) || dropWithValue.contains(where: { a.hasPrefix($0 + "=") }) { i += 1; continue }
        out.append(a)
        i += 1
    }
    return out.joined(separator: " ")
}
