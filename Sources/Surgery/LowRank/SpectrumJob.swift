import SafeTensors
import Linalg

/// `lowrank-svd spectrum`: per 2-D weight (or per delta from a base), the singular values and the
/// rank measures people report; with --intruders, the intruder dimensions of the fine-tune relative
/// to the base (Shuttleworth et al.: top-k left singular vectors of FT whose best |cosine| with any
/// of the base's is below epsilon).
public struct SpectrumJob: Sendable {
    public var input: String
    public var base: String?
    public var top: Int? = 16
    public var intruders = false
    public var intruderK = 10
    public var intruderEpsilon = 0.5
    public var settings = JobSettings()

    public init(input: String) { self.input = input }

    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        if intruders && base == nil { throw UsageError("--intruders compares with a base: give --base") }
        let ft = try Checkpoint(path: input)
        let b = try base.map { try Checkpoint(path: $0) }
        let targets = LowRankTargets.select(ft, settings.selection)
        for e in targets {
            if let b {
                guard let be = b.entry(e.name), be.info.shape == e.info.shape else {
                    throw FormatError(file: ft.filePath(of: e), tensor: e.name, "has no counterpart of the same shape in the base")
                }
            }
        }
        timer.lap("plan")
        let (top, intruders, k, eps) = (self.top, self.intruders, intruderK, intruderEpsilon)
        let rows = try Engine.map(count: targets.count, threads: settings.threads,
                                  progress: Progress(total: targets.count, label: "spectrum", quiet: settings.quiet)) { i -> JSONValue in
            let e = targets[i]
            let shape = e.info.shapeInts
            let w = decodeFloats(ft, e)
            let bw = b.map { decodeFloats($0, $0.entry(e.name)!) }
            // With a base the spectrum is the delta's; intruders compare FT's with the base's.
            let a = Matrix(rows: shape[0], cols: shape[1], data: bw.map { bv in zip(w, bv).map { Float(Double($0) - Double($1)) } } ?? w)
            let full = try svd(a)
            let s = full.s
            var row: [(String, JSONValue)] = [("name", .string(e.name)), ("shape", .array(shape.map { .int($0) })),
                                              ("of", .string(b == nil ? "weight" : "delta"))]
            row.append(("singular_values", .array((top.map { Array(s.prefix($0)) } ?? s).map { .double(Double($0)) })))
            row += [("numerical_rank", .int(Spectrum.numericalRank(s, rows: shape[0], cols: shape[1]))),
                    ("stable_rank", .double(Spectrum.stableRank(s))), ("effective_rank", .double(Spectrum.effectiveRank(s))),
                    ("energy_rank_50", .int(Spectrum.energyRank(s, 0.5))), ("energy_rank_90", .int(Spectrum.energyRank(s, 0.9))),
                    ("energy_rank_99", .int(Spectrum.energyRank(s, 0.99)))]
            if intruders, let bw {
                let uFT = try svd(Matrix(rows: shape[0], cols: shape[1], data: w)).u
                let uBase = try svd(Matrix(rows: shape[0], cols: shape[1], data: bw)).u
                let kk = min(k, uFT.cols)
                var sims: [Double] = []
                for c in 0..<kk {
                    var best = 0.0
                    for j in 0..<uBase.cols {
                        var d = 0.0
                        for r in 0..<uFT.rows { d += Double(uFT[r, c]) * Double(uBase[r, j]) }
                        best = max(best, abs(d))
                    }
                    sims.append(best)
                }
                row += [("intruder_similarities", .array(sims.map { .double($0) })), ("intruders", .int(sims.filter { $0 < eps }.count))]
            }
            return .object(row)
        }
        timer.lap("spectrum")
        report.inputs = [RunReport.describe(ft)] + (b.map { [RunReport.describe($0)] } ?? [])
        report.parameters = [("top", top.map { .int($0) } ?? .null), ("intruders", .bool(intruders)), ("intruder_k", .int(k)),
                             ("intruder_epsilon", .double(eps)), ("svd", .string("exact"))]
        report.tensors = rows
        var summary: [(String, JSONValue)] = [("tensors", .int(rows.count))]
        if intruders { summary.append(("intruders", .int(Int(rows.compactMap { $0["intruders"]?.doubleValue }.reduce(0, +))))) }
        report.summary = summary
        report.timing = timer.phases
        return report
    }
}
