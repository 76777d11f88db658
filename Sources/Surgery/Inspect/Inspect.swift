import SafeTensors

/// `wtool inspect`: what a checkpoint holds, optionally with per-tensor statistics.
public struct InspectJob: Sendable {
    public var settings = JobSettings()
    public var input: String
    public var stats = false

    public init(input: String) { self.input = input }

    public struct Row: Sendable {
        public let entry: Checkpoint.Entry
        public let file: String
        public let stats: TensorStats?
    }

    public struct Result: Sendable {
        public let checkpoint: Checkpoint
        public let rows: [Row]
        public let report: RunReport
    }

    public func run() throws -> Result {
        var timer = PhaseTimer()
        let ckpt = try Checkpoint(path: input)
        let entries = ckpt.entries.filter { settings.selection.selects($0.name) }
        timer.lap("open")
        let withStats = stats
        let rows = try Engine.map(count: entries.count, threads: withStats ? settings.threads : 1,
                                  progress: withStats ? Progress(total: entries.count, label: "inspect", quiet: settings.quiet) : nil) { i in
            let e = entries[i]
            var s: TensorStats? = nil
            if withStats {
                s = TensorStats(dtype: e.info.dtype, bytes: ckpt.bytes(e).baseAddress, count: e.info.count)
                ckpt.release(e)
            }
            return Row(entry: e, file: FileSystem.basename(ckpt.filePath(of: e)), stats: s)
        }
        timer.lap(withStats ? "stats" : "list")

        var report = RunReport(command: settings.command)
        report.inputs = [RunReport.describe(ckpt)]
        report.warnings = ckpt.warnings + settings.selection.unusedPatterns(in: ckpt.tensorNames).map { "pattern '\($0)' matches no tensor" }
        report.parameters = [("stats", .bool(stats)), ("include", .array(settings.selection.include.map { .string($0) })),
                             ("exclude", .array(settings.selection.exclude.map { .string($0) }))]
        report.tensors = rows.map { r in
            var o: [(String, JSONValue)] = [
                ("name", .string(r.entry.name)), ("dtype", .string(r.entry.info.dtype.rawValue)),
                ("shape", .array(r.entry.info.shape.map { .uint($0) })), ("bytes", .int(r.entry.info.byteCount)),
                ("elements", .int(r.entry.info.count)), ("file", .string(r.file)),
            ]
            if let s = r.stats { o.append(("stats", .object(s.json))) }
            return .object(o)
        }
        var dtypes: [String: Int] = [:]
        for r in rows { dtypes[r.entry.info.dtype.rawValue, default: 0] += 1 }
        let meta: JSONValue = ckpt.metadata.map { m in .object(m.map { ($0.0, .string($0.1)) }) } ?? .null
        report.summary = [("tensors", .int(rows.count)),
                          ("parameters", .int(rows.reduce(0) { $0 + $1.entry.info.count })),
                          ("bytes", .int(rows.reduce(0) { $0 + $1.entry.info.byteCount })),
                          ("dtypes", .object(dtypes.map { ($0.key, .int($0.value)) })),
                          ("metadata", meta), ("files", .int(ckpt.files.count))]
        report.timing = timer.phases
        return Result(checkpoint: ckpt, rows: rows, report: report)
    }
}
