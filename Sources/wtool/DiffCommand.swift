import ArgumentParser
import SafeTensors
import Surgery
#if canImport(Glibc)
import Glibc
#endif

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Compare two checkpoints tensor by tensor.",
        discussion: """
        For each tensor present in both: max |b - a|, relative difference ||b - a|| / ||a||, and \
        cosine similarity (all in f64); tensors present on one side only are listed. \
        Exit status, like cmp(1): 0 when the checkpoints are identical (same names, dtypes, shapes \
        and bytes; or every difference within --atol), 1 when they differ, 2 on any error.
        """
    )

    @Argument(help: ArgumentHelp("The first checkpoint.", valueName: "A"))
    var a: String

    @Argument(help: ArgumentHelp("The second checkpoint.", valueName: "B"))
    var b: String

    @Option(name: .long, help: ArgumentHelp("Treat differences up to this absolute value as equal.", valueName: "X"))
    var atol: Double = 0

    @Flag(name: .long, help: "One line per module group (a projection across layers, or a tensor) instead of per tensor: which layers changed and by how much.")
    var summary = false

    @Flag(name: .long, help: "Print the JSON report on stdout.")
    var json = false

    @Option(name: .long, help: ArgumentHelp("Also write the JSON report to FILE.", valueName: "FILE"))
    var report: String?

    @OptionGroup var common: CommonOptions

    func validate() throws {
        try common.refusePart("diff")
        guard atol >= 0 && atol.isFinite else { throw ValidationError("--atol must be a finite number >= 0") }
    }

    func run() throws {
        var job = DiffJob(a: a, b: b)
        job.atol = atol
        job.groups = summary
        job.settings = common.settings()
        let result: DiffJob.Result
        do {
            result = try job.run()
            if let report { try result.report.write(to: report) }
        } catch {
            // diff's statuses follow cmp(1): any trouble is 2, since 1 means "different".
            writeStderr("wtool: error: \(error)\n")
            throw CommandExit(status: 2)
        }
        if json {
            print(result.report.json.pretty())   // with --summary it carries summary.groups
        } else if summary {
            for g in DiffSummary(result.comparisons, atol: atol).groups {
                var line = "\(g.name): " + (g.changed == 0 ? "unchanged" : "\(g.changed) of \(g.tensors) changed")
                if g.changed > 0 && !g.changedLayers.isEmpty { line += " (layers \(DiffSummary.ranges(g.changedLayers)))" }
                if g.changed > 0 { line += ", relative change \(Float(g.relative)), max_abs \(Float(g.maxAbs))" }
                print(escapedForTerminal(line))
            }
            for n in result.onlyInA { print(escapedForTerminal("only in A: \(n)")) }
            for n in result.onlyInB { print(escapedForTerminal("only in B: \(n)")) }
        } else {
            for c in result.comparisons where !c.withinTolerance(atol) {
                if c.shapeMismatch { print(escapedForTerminal("\(c.name): shape differs")); continue }
                if !c.comparable { print(escapedForTerminal(c.name) + ": bytes differ (\(c.dtypeMismatch ? "dtype differs, " : "")not numeric)"); continue }
                var line = "\(c.name): max_abs \(Float(c.maxAbs)) rel \(Float(c.relative)) cos \(Float(c.cosine))"
                if c.dtypeMismatch { line += " (dtype differs)" }
                if c.nanMismatch > 0 { line += " nan_mismatch \(c.nanMismatch)" }
                print(escapedForTerminal(line))
            }
            for n in result.onlyInA { print(escapedForTerminal("only in A: \(n)")) }
            for n in result.onlyInB { print(escapedForTerminal("only in B: \(n)")) }
            let differ = result.comparisons.filter { !$0.withinTolerance(atol) }.count
            note(result.same ? (atol > 0 ? "equal within atol \(atol): " : "identical: ") + "\(result.comparisons.count) tensors"
                 : "different: \(differ) of \(result.comparisons.count) tensors, \(result.onlyInA.count) only in A, \(result.onlyInB.count) only in B",
                 quiet: common.quiet)
        }
        if !result.same { throw CommandExit(status: 1) }
    }
}
