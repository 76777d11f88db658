import SafeTensors

/// `wtool diff`: compares two checkpoints tensor by tensor (values in f64).
public struct DiffJob: Sendable {
    public var settings = JobSettings()
    public var a: String
    public var b: String
    public var atol = 0.0
    /// Per module group summaries (`--summary`): identical tensors are then decoded too, since
    /// their norm counts in their group's relative change; otherwise a byte comparison suffices.
    public var groups = false

    public init(a: String, b: String) { self.a = a; self.b = b }

    public struct Comparison: Sendable {
        public var name: String
        public var identical = false        // same dtype, shape and bytes
        public var shapeMismatch = false
        public var dtypeMismatch = false
        public var maxAbs = 0.0
        public var relative = 0.0           // ||b - a|| / ||a||
        public var cosine = Double.nan
        public var nanMismatch = 0          // positions where exactly one side is NaN
        public var comparable = true        // values could be decoded and compared
        public var normSqA = 0.0            // ||a||², for group summaries
        public var diffSq = 0.0             // ||b - a||²
        /// Equal within `atol` (identical bytes always are).
        public func withinTolerance(_ atol: Double) -> Bool {
            identical || (comparable && !shapeMismatch && nanMismatch == 0 && maxAbs <= atol)
        }
    }

    public struct Result: Sendable {
        public let comparisons: [Comparison]
        public let onlyInA: [String]
        public let onlyInB: [String]
        public let report: RunReport
        public let same: Bool
    }

    public func run() throws -> Result {
        var timer = PhaseTimer()
        let ca = try Checkpoint(path: a)
        let cb = try Checkpoint(path: b)
        let namesA = ca.tensorNames.filter { settings.selection.selects($0) }
        let namesB = Set(cb.tensorNames.filter { settings.selection.selects($0) })
        let setA = Set(namesA)
        let common = namesA.filter { namesB.contains($0) }
        let onlyA = namesA.filter { !namesB.contains($0) }
        let onlyB = cb.tensorNames.filter { settings.selection.selects($0) && !setA.contains($0) }
        timer.lap("open")
        let comps = try Engine.map(count: common.count, threads: settings.threads,
                                   progress: Progress(total: common.count, label: "diff", quiet: settings.quiet)) { i in
            let ea = ca.entry(common[i])!, eb = cb.entry(common[i])!
            defer { ca.release(ea); cb.release(eb) }
            return DiffJob.compare(ea.info, ca.bytes(ea), eb.info, cb.bytes(eb), normOfIdentical: groups)
        }
        timer.lap("compare")
        let tol = atol
        let same = onlyA.isEmpty && onlyB.isEmpty && comps.allSatisfy { $0.withinTolerance(tol) }

        var report = RunReport(command: settings.command)
        report.inputs = [RunReport.describe(ca), RunReport.describe(cb)]
        report.warnings = ca.warnings + cb.warnings
        report.parameters = [("atol", .double(atol)), ("include", .array(settings.selection.include.map { .string($0) })),
                             ("exclude", .array(settings.selection.exclude.map { .string($0) }))]
        report.tensors = comps.map { c in
            var o: [(String, JSONValue)] = [("name", .string(c.name)), ("identical", .bool(c.identical))]
            if c.shapeMismatch { o.append(("shape_mismatch", .bool(true))) }
            if c.dtypeMismatch { o.append(("dtype_mismatch", .bool(true))) }
            if c.comparable && !c.shapeMismatch {
                o += metric("max_abs_diff", c.maxAbs) + metric("relative_diff", c.relative) + metric("cosine", c.cosine)
                o.append(("nan_mismatch", .int(c.nanMismatch)))
            }
            return .object(o)
        }
        report.summary = [("same", .bool(same)), ("compared", .int(comps.count)),
                          ("identical", .int(comps.filter(\.identical).count)),
                          ("different", .int(comps.filter { !$0.withinTolerance(tol) }.count)),
                          ("only_in_a", .array(onlyA.map { .string($0) })),
                          ("only_in_b", .array(onlyB.map { .string($0) })),
                          ("max_abs_diff", .double(comps.filter { $0.comparable && !$0.shapeMismatch }.map(\.maxAbs).max() ?? 0))]
        if groups { report.summary.append(("groups", DiffSummary(comps, atol: tol).json)) }
        report.timing = timer.phases
        return Result(comparisons: comps, onlyInA: onlyA, onlyInB: onlyB, report: report, same: same)
    }

    static func compare(_ ia: TensorInfo, _ ba: UnsafeRawBufferPointer, _ ib: TensorInfo, _ bb: UnsafeRawBufferPointer,
                        normOfIdentical: Bool = false) -> Comparison {
        var c = Comparison(name: ia.name)
        c.dtypeMismatch = ia.dtype != ib.dtype
        c.shapeMismatch = ia.shape != ib.shape
        if !c.dtypeMismatch && !c.shapeMismatch && ba.elementsEqual(bb) {
            c.identical = true
            c.cosine = 1
            c.comparable = ia.dtype.isNumeric
            if c.comparable && normOfIdentical {
                // ||a||² still counts in a group's relative change.
                let n = ia.count, block = 1 << 16
                let x = UnsafeMutablePointer<Double>.allocate(capacity: max(1, min(block, n)))
                defer { x.deallocate() }
                var i = 0
                while i < n {
                    let k = min(block, n - i)
                    Codec.decode(ia.dtype, ba.baseAddress! + i * ia.dtype.size!, count: k, into: x)
                    for j in 0..<k where x[j].isFinite { c.normSqA += x[j] * x[j] }
                    i += k
                }
            }
            return c
        }
        guard !c.shapeMismatch else { return c }
        guard ia.dtype.isNumeric && ib.dtype.isNumeric else { c.comparable = false; return c }
        let n = ia.count, block = 1 << 16
        let x = UnsafeMutablePointer<Double>.allocate(capacity: max(1, min(block, n)))
        let y = UnsafeMutablePointer<Double>.allocate(capacity: max(1, min(block, n)))
        defer { x.deallocate(); y.deallocate() }
        var dot = 0.0, na = 0.0, nb = 0.0, nd = 0.0, maxAbs = 0.0
        var i = 0
        while i < n {
            let k = min(block, n - i)
            Codec.decode(ia.dtype, ba.baseAddress! + i * ia.dtype.size!, count: k, into: x)
            Codec.decode(ib.dtype, bb.baseAddress! + i * ib.dtype.size!, count: k, into: y)
            for j in 0..<k {
                let p = x[j], q = y[j]
                if p.isNaN || q.isNaN {
                    if p.isNaN != q.isNaN { c.nanMismatch += 1 }
                    continue
                }
                if p == q { dot += p * q; na += p * p; nb += q * q; continue }  // also equal infinities
                let d = q - p
                maxAbs = max(maxAbs, abs(d))
                dot += p * q; na += p * p; nb += q * q; nd += d * d
            }
            i += k
        }
        c.maxAbs = maxAbs
        c.normSqA = na
        c.diffSq = nd
        c.relative = na > 0 ? (nd / na).squareRoot() : (nd > 0 ? .infinity : 0)
        c.cosine = na > 0 && nb > 0 ? dot / (na.squareRoot() * nb.squareRoot()) : .nan
        return c
    }
}
