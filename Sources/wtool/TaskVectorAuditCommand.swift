import ArgumentParser
import SafeTensors
import Surgery

extension TaskVectorCommand {
    struct Audit: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Where a fine-tune's change is concentrated, and what in it is out of line.",
            discussion: """
            Compares FT with --base tensor by tensor and ranks findings by score: robust z-scores \
            (median and MAD, on log norms) of each row and column of a matrix against the others \
            (embedding and lm_head rows are candidate trigger tokens, named by their token strings), \
            of each tensor's change against the same tensor in the other layers (norm, and stable \
            rank on the low side); one row or column holding most of a change (20 x its share); \
            tensors a LoRA on the usual targets would not touch when the rest looks like a LoRA (4); \
            NaN/Inf (1000); shapes changed or tensors on one side only (100); dtypes changed (1). \
            The JSON report (stdout, or --report) lists every finding; stderr shows those at or \
            above --threshold (default 8). --fail-above S exits 3 when a finding scores above S. \
            The formulas: wtool-task-vector(1), AUDIT.
            """)
        @Argument(help: ArgumentHelp("The fine-tuned model (or a task vector).", valueName: "FT")) var fineTuned: String
        @Option(name: .long, help: ArgumentHelp("The base model.", valueName: "BASE")) var base: String?
        @Option(name: .long, help: ArgumentHelp("A folder with tokenizer.json or tokenizer.model, to name tokens (default: FT's or BASE's folder).", valueName: "DIR")) var tokenizer: String?
        @Option(name: .long, help: ArgumentHelp("Findings shown on stderr from this score (default 8).", valueName: "S")) var threshold: Double = 8
        @Option(name: .long, help: ArgumentHelp("Exit with status 3 when any finding scores above S (CI gates).", valueName: "S")) var failAbove: Double?
        @Option(name: .long, help: ArgumentHelp("Write the JSON report here (else stdout).", valueName: "FILE")) var report: String?
        @Option(name: .long, help: ArgumentHelp("task-vector, model or auto (default: by metadata).", valueName: "KIND")) var inputs: String = "auto"
        @OptionGroup var common: CommonOptions

        func validate() throws {
            try common.refusePart("task-vector audit")
            guard TaskVectorSource.Kind(rawValue: inputs) != nil else { throw ValidationError("--inputs must be auto, task-vector or model") }
            guard threshold.isFinite, threshold >= 0 else { throw ValidationError("--threshold must be a non-negative number") }
            if let failAbove, !failAbove.isFinite { throw ValidationError("--fail-above must be a number") }
        }

        func run() throws {
            var job = AuditJob(fineTuned: fineTuned)
            job.base = base
            job.kind = TaskVectorSource.Kind(rawValue: inputs)!
            job.tokenizer = tokenizer
            job.threshold = threshold
            job.settings = common.settings()
            let r = try job.run()
            if let report { try r.write(to: report) } else { print(r.json.pretty()) }
            for w in r.warnings { note("warning: \(w)", quiet: common.quiet) }
            let summary = Dictionary(uniqueKeysWithValues: r.summary)
            let findings = summary["findings_ranked"]?.arrayValue ?? []
            if !common.quiet {
                let shown = findings.filter { ($0["score"]?.doubleValue ?? 0) >= threshold }
                note("audit: \(findings.count) finding(s), \(shown.count) at or above \(formatFixed(threshold, 1))", quiet: false)
                for f in shown.prefix(20) {
                    note("  \(pad(formatFixed(f["score"]?.doubleValue ?? 0, 1), 7)) \(pad(f["rule"]?.stringValue ?? "", 20)) \(f["tensor"]?.stringValue ?? ""): \(f["message"]?.stringValue ?? "")", quiet: false)
                }
                if shown.count > 20 { note("  ... \(shown.count - 20) more in the report", quiet: false) }
            }
            if let failAbove, let top = summary["max_score"]?.doubleValue, top > failAbove {
                note("audit: a finding scores \(formatFixed(top, 1)), above --fail-above \(formatFixed(failAbove, 1))", quiet: common.quiet)
                throw CommandExit(status: 3)
            }
        }
    }
}
