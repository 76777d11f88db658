import SafeTensors
import Linalg

/// `task-vector analyze`: how task vectors relate, per tensor and for the whole model: norms,
/// max |τ|, near-zero fractions, pairwise cosines, TIES sign conflicts, optionally spectra.
public struct AnalyzeTaskVectorsJob: Sendable {
    public var settings = JobSettings()
    public var vectors: [String]
    public var base: String?
    public var kind: TaskVectorSource.Kind = .auto
    public var zeroTolerance = 1e-8
    public var spectrum = false
    public var top = 8

    public init(vectors: [String]) { self.vectors = vectors }

    /// Per-tensor sums that add up to whole-model figures.
    struct Sums: Sendable {
        var sq: [Double]        // Σ τ_i²
        var dots: [Double]      // Σ τ_i τ_j, pairs in order (0,1), (0,2), ..., (1,2), ...
        var bothNonzero: [Int]  // entries where τ_i and τ_j are both non-zero
        var opposite: [Int]     // ... and of opposite signs
    }

    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let b = try base.map { try Checkpoint(path: $0) }
        let tvs = try vectors.map { try TaskVectorSource(path: $0, kind: kind) }
        for (tv, p) in zip(tvs, vectors) where !tv.isDelta && b == nil {
            throw UsageError("\(p) is a model, not a task vector: give --base to compute its delta")
        }
        // Tensors every task vector has (float, same shape); the others are listed.
        let first = tvs[0].checkpoint
        var shared: [String] = [], partial: [String] = []
        for e in first.entries where settings.selection.selects(e.name) && e.info.dtype.isFloatingPoint {
            let all = tvs.allSatisfy { $0.checkpoint.entry(e.name)?.info.shape == e.info.shape }
            if all, b == nil || b!.entry(e.name)?.info.shape == e.info.shape { shared.append(e.name) } else { partial.append(e.name) }
        }
        let common = shared
        timer.lap("plan")
        let M = tvs.count, tol = zeroTolerance, spectrum = self.spectrum, top = self.top
        let pairs = (0..<M).flatMap { i in ((i + 1)..<M).map { (i, $0) } }
        let results = try Engine.map(count: common.count, threads: settings.threads, progress: Progress(total: common.count, label: "analyze", quiet: settings.quiet)) { k -> (JSONValue, Sums) in
            let name = common[k]
            let bv = b.map { decodeFloats($0, $0.entry(name)!) }
            let ds = tvs.map { $0.delta(name, base: bv)! }
            var sums = Sums(sq: ds.map { VectorMath.dot($0, $0) }, dots: pairs.map { VectorMath.dot(ds[$0.0], ds[$0.1]) },
                            bothNonzero: [], opposite: [])
            for (i, j) in pairs {
                var both = 0, opp = 0
                for t in 0..<ds[i].count where ds[i][t] != 0 && ds[j][t] != 0 {
                    both += 1
                    if (ds[i][t] > 0) != (ds[j][t] > 0) { opp += 1 }
                }
                sums.bothNonzero.append(both); sums.opposite.append(opp)
            }
            var row: [(String, JSONValue)] = [("name", .string(name)), ("shape", .array(first.entry(name)!.info.shape.map { .uint($0) }))]
            row.append(("norm", .array(sums.sq.map { .double($0.squareRoot()) })))
            row.append(("max_abs", .array(ds.map { .double(Double($0.map(abs).max() ?? 0)) })))
            row.append(("near_zero_fraction", .array(ds.map { d in .double(d.isEmpty ? 0 : Double(d.filter { Double(abs($0)) <= tol }.count) / Double(d.count)) })))
            if !pairs.isEmpty {
                row.append(("cosine", .array(pairs.enumerated().map { p, ij in
                    let den = (sums.sq[ij.0] * sums.sq[ij.1]).squareRoot()
                    return .double(den > 0 ? sums.dots[p] / den : .nan)
                })))
                row.append(("sign_conflict_fraction", .array(pairs.indices.map { p in
                    .double(sums.bothNonzero[p] > 0 ? Double(sums.opposite[p]) / Double(sums.bothNonzero[p]) : 0)
                })))
            }
            let shape = first.entry(name)!.info.shapeInts
            if spectrum && shape.count == 2 && shape[0] > 0 && shape[1] > 0 {
                row.append(("spectrum", .array(try ds.map { d in try AnalyzeTaskVectorsJob.spectrumJSON(d, shape, top: top) })))
            }
            return (.object(row), sums)
        }
        timer.lap("analyze")
        // Whole model: the per-tensor sums added in name order (fixed, so thread-independent).
        var total = Sums(sq: Array(repeating: 0, count: M), dots: Array(repeating: 0, count: pairs.count),
                         bothNonzero: Array(repeating: 0, count: pairs.count), opposite: Array(repeating: 0, count: pairs.count))
        for (_, s) in results {
            for i in 0..<M { total.sq[i] += s.sq[i] }
            for p in pairs.indices {
                total.dots[p] += s.dots[p]; total.bothNonzero[p] += s.bothNonzero[p]; total.opposite[p] += s.opposite[p]
            }
        }
        var matrix = [[Double]](repeating: [Double](repeating: 1, count: M), count: M)
        for (p, (i, j)) in pairs.enumerated() {
            let den = (total.sq[i] * total.sq[j]).squareRoot()
            matrix[i][j] = den > 0 ? total.dots[p] / den : .nan
            matrix[j][i] = matrix[i][j]
        }
        report.inputs = (b.map { [RunReport.describe($0)] } ?? []) + tvs.map { RunReport.describe($0.checkpoint) }
        report.parameters = [("zero_tolerance", .double(zeroTolerance)), ("spectrum", .bool(spectrum)), ("top", .int(top)),
                             ("inputs_are", .array(tvs.map { .string($0.isDelta ? "task-vector" : "model") }))]
        report.tensors = results.map(\.0)
        report.summary = [("tensors", .int(common.count)), ("not_in_every_vector", .array(partial.map { .string($0) })),
                          ("norm", .array(total.sq.map { .double($0.squareRoot()) })),
                          ("cosine_matrix", .array(matrix.map { .array($0.map { .double($0) }) })),
                          ("sign_conflict_fraction", .array(pairs.indices.map { p in
                              .double(total.bothNonzero[p] > 0 ? Double(total.opposite[p]) / Double(total.bothNonzero[p]) : 0) }))]
        report.timing = timer.phases
        return report
    }

    /// Top singular values and the ranks holding 90% and 99% of the energy (Σ σ²), by LAPACK.
    static func spectrumJSON(_ d: [Float], _ shape: [Int], top: Int) throws -> JSONValue {
        let s = try singularValues(Matrix(rows: shape[0], cols: shape[1], data: d)).map(Double.init)
        let energy = s.reduce(0) { $0 + $1 * $1 }
        func rank(_ f: Double) -> Int {
            guard energy > 0 else { return 0 }
            var acc = 0.0
            for (i, x) in s.enumerated() { acc += x * x; if acc >= f * energy { return i + 1 } }
            return s.count
        }
        return .object([("top_singular_values", .array(s.prefix(top).map { .double($0) })),
                        ("energy_rank_90", .int(rank(0.9))), ("energy_rank_99", .int(rank(0.99)))])
    }
}
