import ArgumentParser
import SafeTensors
import Surgery

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List a checkpoint's tensors (name, dtype, shape, bytes) and metadata.",
        discussion: """
        Validates every file fully (the reference reader's checks, plus duplicate names, shard \
        index consistency and Git LFS pointers). With --stats, adds per-tensor min, max, mean, \
        std, L2 norm (all in f64, over finite values), NaN/Inf counts and the fraction of zeros. \
        --json prints the report (schema in wtool(1)) to stdout instead of the table.
        """
    )

    @Argument(help: ArgumentHelp("A .safetensors file or a model folder.", valueName: "PATH"))
    var path: String

    @Flag(name: .long, help: "Print the JSON report on stdout.")
    var json = false

    @Flag(name: .long, help: "Compute per-tensor statistics (reads every byte).")
    var stats = false

    @Option(name: .long, help: ArgumentHelp("Also write the JSON report to FILE.", valueName: "FILE"))
    var report: String?

    @OptionGroup var common: CommonOptions

    func validate() throws { try common.refusePart("inspect") }

    func run() throws {
        var job = InspectJob(input: path)
        job.stats = stats
        job.settings = common.settings()
        let result = try job.run()
        if let report { try result.report.write(to: report) }
        if json {
            print(result.report.json.pretty())
            return
        }
        printTable(result)
    }

    private func printTable(_ r: InspectJob.Result) {
        let width = min(60, r.rows.map(\.entry.name.count).max() ?? 4)
        var header = pad("name", width) + "  " + pad("dtype", 11) + "  " + pad("shape", 18) + "  " + pad("bytes", 12)
        if stats { header += "  " + ["min", "max", "mean", "std", "l2", "nan", "inf", "zeros"].map { pad($0, 10) }.joined(separator: " ") }
        print(escapedForTerminal(header))
        for row in r.rows {
            let e = row.entry.info
            var line = pad(e.name, width) + "  " + pad(e.dtype.rawValue, 11) + "  "
                + pad("[" + e.shape.map(String.init).joined(separator: ", ") + "]", 18) + "  " + pad(String(e.byteCount), 12)
            if let s = row.stats {
                let finite = s.finite > 0
                let vals = [finite ? s.min : .nan, finite ? s.max : .nan, finite ? s.mean : .nan, s.std, s.l2]
                line += "  " + vals.map { pad(short($0), 10) }.joined(separator: " ")
                line += " " + pad(String(s.nan), 10) + " " + pad(String(s.inf), 10) + " " + pad(formatFixed(s.zeroFraction, 4), 10)
            }
            print(escapedForTerminal(line))
        }
        let c = r.checkpoint
        print("\(r.rows.count) tensors, \(r.rows.reduce(0) { $0 + $1.entry.info.count }) parameters, "
              + "\(ByteSize.describe(UInt64(r.rows.reduce(0) { $0 + $1.entry.info.byteCount }))) in \(c.files.count) file(s)")
        if let m = c.metadata, !m.isEmpty {
            print("metadata:")
            for (k, v) in m { print(escapedForTerminal("  \(k): \(v)")) }
        }
        for w in r.report.warnings { note("warning: \(w)", quiet: common.quiet) }
    }

    private func short(_ v: Double) -> String {
        guard v.isFinite else { return "\(v)" }
        if v == 0 { return "0" }
        let a = abs(v)
        if a >= 1e-3 && a < 1e5 { return formatFixed(v, 5) }
        // Scientific with a fixed width, so the columns stay aligned.
        var e = Int((a.exponent == .min ? 0 : Double(a.exponent)) * 0.30103)
        while a / pow10(e) >= 10 { e += 1 }
        while a / pow10(e) < 1 { e -= 1 }
        let exp = (e < 0 ? "-" : "+") + (abs(e) < 10 ? "0" : "") + String(abs(e))
        return formatFixed(v / pow10(e), 3) + "e" + exp
    }
}

private func pow10(_ e: Int) -> Double {
    var r = 1.0
    for _ in 0..<abs(e) { r *= 10 }
    return e < 0 ? 1 / r : r
}
