import SafeTensors
import Linalg

/// `wtool prune-sparse`: zero the entries a rule scores lowest, in the 2-D weights of the linear
/// layers; everything else is copied byte for byte. Kept entries keep their exact bytes and pruned
/// ones become +0.0, so no value is ever re-encoded (except by soft-threshold, which shrinks them).
public struct PruneJob: Sendable {
    public var settings = JobSettings()
    public enum Method: String, Sendable, CaseIterable { case magnitude, wanda, principal, softThreshold = "soft-threshold" }
    public enum Scope: String, Sendable, CaseIterable { case tensor, row, global }

    public var input: String
    public var output: String
    public var method: Method = .magnitude
    public var sparsity = 0.5
    /// nil: the method's own comparison group (`Scope.default`).
    public var scope: Scope?
    public var nm: (n: Int, m: Int)?
    public var statsPath: String?
    public var fallbackMagnitude = false
    public var rank: Int?
    /// principal: which SVD computes W_R (the shared rule: exact when cheap).
    public var svd = SVDChoice()
    public var maskOut: String?
    /// DSnoT prune-and-grow on top of the wanda or magnitude mask (needs mean and variance statistics).
    public var dsnot: DSnoT?

    public init(input: String, output: String) { self.input = input; self.output = output }

    /// The comparison group each method's authors use: Wanda compares the scores of each output
    /// row (locuslab/wanda `prune_wanda`), and so does DSnoT, which refines Wanda masks row by row;
    /// soft-threshold has one global threshold; magnitude pruning is per tensor (layer-wise).
    public static func defaultScope(_ method: Method, dsnot: Bool) -> Scope {
        if method == .softThreshold { return .global }
        if method == .wanda || dsnot { return .row }
        return .tensor
    }

    /// The default targets: 2-D float weights inside the layers, except norms and embeddings.
    public static func isDefaultTarget(_ e: TensorInfo) -> Bool {
        guard e.shape.count == 2, e.dtype.isFloatingPoint, e.name.hasSuffix(".weight"), LayerName(e.name) != nil else { return false }
        let n = e.name.lowercased()
        return !n.contains("norm") && !n.contains("embed")
    }

    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let scope = self.scope ?? PruneJob.defaultScope(method, dsnot: dsnot != nil)
        guard sparsity >= 0 && sparsity <= 1 else { throw UsageError("--sparsity must be in [0, 1]") }
        if method == .principal && rank == nil { throw UsageError("principal needs --rank R") }
        if method == .softThreshold && (nm != nil || scope != .global) {
            throw UsageError("soft-threshold uses one global threshold: use --scope global, without --nm")
        }
        if nm != nil && scope == .global { throw UsageError("--nm selects within groups of each row; it takes no --scope global") }
        if method == .wanda && statsPath == nil { throw UsageError("wanda needs --stats FILE (Σx² per input channel)") }
        if dsnot != nil {
            guard method == .wanda || method == .magnitude else { throw UsageError("--dsnot refines a wanda or magnitude mask") }
            guard scope != .global else { throw UsageError("--dsnot works row by row: use --scope row or tensor, or --nm") }
            guard statsPath != nil else { throw UsageError("--dsnot needs --stats FILE with act_sq_sum, act_mean and act_var") }
        }
        let ckpt = try Checkpoint(path: input)
        let stats = try statsPath.map { try PruneStatistics(path: $0) }
        var inputs = [ckpt]
        if let c = stats?.checkpoint { inputs.append(c) }
        let out = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: inputs, part: settings.part)
        report.warnings = ckpt.warnings
        let defaultSelection = settings.selection.include.isEmpty && settings.selection.exclude.isEmpty
        let targets = ckpt.entries.filter { e in
            (defaultSelection ? PruneJob.isDefaultTarget(e.info) : settings.selection.selects(e.name) && e.info.dtype.isFloatingPoint && !e.info.shape.isEmpty)
        }
        let targetSet = Set(targets.map(\.name))
        // Plan-time checks: N:M divisibility, statistics present and sized.
        var channelStats: [String: [Double]] = [:]
        var moments: [String: (mean: [Double], variance: [Double], squares: [Double])] = [:]
        for e in targets {
            let cols = e.info.shapeInts.last ?? 1
            if let nm, cols % nm.m != 0 {
                throw FormatError(file: ckpt.filePath(of: e), tensor: e.name, "\(cols) input columns are not divisible by M = \(nm.m)")
            }
            if dsnot != nil {
                guard let m = try stats!.channelMoments(forWeight: e.name, inputs: cols),
                      let sq = try stats!.channelSquares(forWeight: e.name, inputs: cols) else {
                    throw FormatError(file: stats!.path, tensor: e.name, "DSnoT needs '<module>.act_mean', '<module>.act_var' and '<module>.act_sq_sum' for this weight")
                }
                moments[e.name] = (m.mean, m.variance, sq)
            }
            if method == .wanda {
                if let s = try stats!.channelSquares(forWeight: e.name, inputs: cols) {
                    channelStats[e.name] = s
                } else if !fallbackMagnitude {
                    throw FormatError(file: stats!.path, tensor: e.name, "no '<module>.act_sq_sum' statistics for this weight (use --fallback magnitude)")
                }
            }
        }
        let outputs = ckpt.entries.map { OutputTensor(name: $0.name, dtype: $0.info.dtype, shape: $0.info.shape) }
        timer.lap("plan")

        // Scores (recomputed where needed, never held for the whole model).
        let (method, rank, sparsity, nm, svd) = (self.method, self.rank, self.sparsity, self.nm, self.svd)
        let cs = channelStats, mo = moments, dsnot = self.dsnot
        @Sendable func scores(_ e: Checkpoint.Entry) throws -> [Float] { try scoresOf(decodeFloats(ckpt, e), e) }
        @Sendable func scoresOf(_ w: [Float], _ e: Checkpoint.Entry) throws -> [Float] {
            let cols = e.info.shapeInts.last ?? 1
            switch method {
            case .magnitude, .softThreshold:
                return w  // selection reads magnitudes (the sign bit is masked): no copy needed
            case .wanda:
                guard let a = cs[e.name] else { return w }  // --fallback magnitude
                let s = a.map { $0.squareRoot() }
                return [Float](unsafeUninitializedCapacity: w.count) { out, done in
                    w.withUnsafeBufferPointer { w in
                        var k = 0
                        while k < w.count {   // row by row: no index arithmetic per entry
                            for c in 0..<cols { out[k + c] = Float(Double(abs(w[k + c])) * s[c]) }
                            k += cols
                        }
                    }
                    done = w.count
                }
            case .principal:
                // |W_R|: the rank-R approximation from the shared SVD engine and its rule.
                let a = Matrix(rows: w.count / max(1, cols), cols: cols, data: w)
                let opts = svd.options(rank: rank!, rows: a.rows, cols: a.cols, stream: e.name)
                return try TruncatedSVD(a, rank: rank!, options: opts).reconstruct().data.map { abs($0) }
            }
        }
        // Global scope: one k-th smallest score over every target, found by counting passes.
        var globalCut: GlobalCut? = nil
        if scope == .global {
            globalCut = try GlobalCut(targets.map { e in { @Sendable in try scores(e) } }, sparsity: sparsity, threads: settings.threads)
        }
        timer.lap("select")
        let maskWriter = try maskOut.map { path in
            try CheckpointWriter(layout: .file(path), tensors: targets.map { OutputTensor(name: $0.name, dtype: .BOOL, shape: $0.info.shape) },
                                 metadata: ["format": "pt", "wtool.kind": "prune_mask"])
        }
        let maskIndex = Dictionary(uniqueKeysWithValues: targets.enumerated().map { ($1.name, $0) })
        let writer = try out.writer(tensors: outputs)
        let cut = globalCut
        let rows: [JSONValue]
        do {
            rows = try Engine.map(count: ckpt.entries.count, threads: settings.threads, progress: Progress(total: ckpt.entries.count, label: "prune", quiet: settings.quiet)) { i in
                let e = ckpt.entries[i]
                guard writer.owns(i) else { return .object([("name", .string(e.name)), ("part", .string("another"))]) }
                let src = ckpt.bytes(e)
                guard targetSet.contains(e.name) else {
                    try writer.write(tensor: i, src)
                    ckpt.release(e)
                    return .object([("name", .string(e.name)), ("target", .bool(false))])
                }
                if method == .magnitude && (scope == .tensor || nm != nil) && dsnot == nil && maskWriter == nil
                    && (e.info.dtype == .F16 || e.info.dtype == .BF16) {
                    // The fast path: selection, output and norms straight from the 16-bit storage bits.
                    let k = Int(Double(e.info.count) * sparsity)
                    let r: HalfMagnitude.Result
                    if let nm {
                        r = try HalfMagnitude.pruneNM(src, dtype: e.info.dtype, n: nm.n, m: nm.m) { try writer.write(tensor: i, at: $0, $1) }
                    } else {
                        r = try HalfMagnitude.prune(src, dtype: e.info.dtype, k: k) { try writer.write(tensor: i, at: $0, $1) }
                    }
                    ckpt.release(e)
                    var row: [(String, JSONValue)] = [("name", .string(e.name)), ("target", .bool(true)), ("method", .string(method.rawValue)),
                                                      ("scope", .string(nm.map { "\($0.n):\($0.m)" } ?? scope.rawValue))]
                    if nm == nil && k > 0 && k < e.info.count { row += metric("threshold", Double(r.threshold)) }
                    let requested = nm.map { Double($0.m - $0.n) / Double($0.m) } ?? sparsity
                    row += [("requested_sparsity", .double(requested)), ("pruned", .int(r.pruned)),
                            ("achieved_sparsity", .double(e.info.count > 0 ? Double(r.zeros) / Double(e.info.count) : 0))]
                    row += metric("relative_norm_removed", r.normSq > 0 ? (r.removedSq / r.normSq).squareRoot() : 0)
                    return .object(row)
                }
                if (method == .magnitude || method == .wanda) && (scope == .row || nm != nil) && maskWriter == nil
                    && (e.info.dtype.size == 2 || e.info.dtype.size == 4) && e.info.dtype.isFloatingPoint {
                    // Streamed by rows (row scope, or N:M groups within rows): no tensor-sized
                    // scores, mask or decoded copy.
                    let cols = e.info.shapeInts.last ?? 1
                    let k = Int(Double(cols) * sparsity)
                    let a = method == .wanda ? cs[e.name] : nil
                    let scale = a.map { $0.map { $0.squareRoot() } }
                    // DSnoT gives kept weights up in Wanda-score order, whatever the initial mask
                    // (with wanda the selection's scores are already those: the same squared norms).
                    let refinement = dsnot.flatMap { d in mo[e.name].map { m in
                        RowPrune.Refinement(dsnot: d, mean: m.mean, variance: m.variance,
                                            giveScale: a != nil && a! == m.squares ? nil : m.squares.map { $0.squareRoot() })
                    } }
                    let t = try RowPrune.prune(ckpt, e, cols: cols, k: k, nm: nm, columnScale: scale, activations: a, refinement: refinement) {
                        try writer.write(tensor: i, at: $0, $1)
                    }
                    ckpt.release(e)
                    var row: [(String, JSONValue)] = [("name", .string(e.name)), ("target", .bool(true)), ("method", .string(method.rawValue)),
                                                      ("scope", .string(nm.map { "\($0.n):\($0.m)" } ?? scope.rawValue))]
                    if refinement != nil { row.append(("dsnot_swaps", .int(t.swaps))) }
                    let requested = nm.map { Double($0.m - $0.n) / Double($0.m) } ?? sparsity
                    row += [("requested_sparsity", .double(requested)), ("pruned", .int(t.pruned)),
                            ("achieved_sparsity", .double(e.info.count > 0 ? Double(t.zeros) / Double(e.info.count) : 0))]
                    row += metric("relative_norm_removed", t.w_sq > 0 ? (t.removed_sq / t.w_sq).squareRoot() : 0)
                    if a != nil { row += metric("estimated_relative_output_error", t.out_den > 0 ? (t.out_num / t.out_den).squareRoot() : 0) }
                    return .object(row)
                }
                let w = decodeFloats(ckpt, e)
                let sc = try scoresOf(w, e)
                let cols = e.info.shapeInts.last ?? 1
                var pruned: [Bool] = sc.withUnsafeBufferPointer { p in
                    if let nm { return PruneMask.nm(p, cols: cols, n: nm.n, m: nm.m) }
                    switch scope {
                    case .tensor: return PruneMask.smallest(p, Int(Double(p.count) * sparsity))
                    case .row: return PruneMask.perRow(p, cols: cols, sparsity: sparsity)
                    case .global: return cut!.mask(tensor: maskIndex[e.name]!, p)
                    }
                }
                var row: [(String, JSONValue)] = [("name", .string(e.name)), ("target", .bool(true)), ("method", .string(method.rawValue)),
                                                  ("scope", .string(nm.map { "\($0.n):\($0.m)" } ?? scope.rawValue))]
                if method == .principal {
                    row.append(("svd", .string(svd.options(rank: rank!, rows: w.count / max(1, cols), cols: cols, stream: e.name).method.rawValue)))
                }
                if let dsnot, let m = mo[e.name] {
                    // DSnoT's order for giving up kept weights is the Wanda score, whatever the initial mask.
                    let wanda = w.indices.map { Float(Double(abs(w[$0])) * m.squares[$0 % cols].squareRoot()) }
                    let swaps = dsnot.refine(&pruned, w: w, cols: cols, mean: m.mean, variance: m.variance, score: wanda, groupSize: nm?.m)
                    row.append(("dsnot_swaps", .int(swaps)))
                }
                let size = e.info.dtype.size!
                // What changed, per entry: w - w' (the removed part); nil: the pruned entries of w.
                var removed: [Float]? = nil
                if method == .softThreshold {
                    let buf = UnsafeMutableRawPointer.allocate(byteCount: max(1, src.count), alignment: 64)
                    defer { buf.deallocate() }
                    // sign(w) * max(|w| - t, 0), zeros written as +0.0.
                    let t = cut!.threshold
                    var result = w.map { x -> Float in let a = abs(x) - t; return a > 0 ? (x < 0 ? -a : a) : 0 }
                    result.withUnsafeBufferPointer { Codec.encode($0.baseAddress!, count: $0.count, as: e.info.dtype, into: buf) }
                    // A shrunk value can underflow to -0.0 in a narrow dtype: engines misread -0.0 in
                    // sparse checkpoints, so every zero is written as +0.0.
                    for k in 0..<result.count {
                        let last = buf.load(fromByteOffset: k * size + size - 1, as: UInt8.self)
                        guard last == 0x80, (0..<(size - 1)).allSatisfy({ buf.load(fromByteOffset: k * size + $0, as: UInt8.self) == 0 }) else { continue }
                        buf.storeBytes(of: 0, toByteOffset: k * size + size - 1, as: UInt8.self)
                        result[k] = 0
                    }
                    for k in result.indices { pruned[k] = result[k] == 0 }
                    removed = zip(w, result).map { $0 - $1 }
                    row += metric("threshold", Double(t))
                    try writer.write(tensor: i, UnsafeRawBufferPointer(start: buf, count: src.count))
                } else {
                    // Kept entries keep their exact bytes; pruned ones become all-zero bytes (+0.0),
                    // written in 1 MiB pieces (no tensor-sized output buffer).
                    let piece = max(1, (1 << 20) / size)
                    let buf = UnsafeMutableRawPointer.allocate(byteCount: piece * size, alignment: 64)
                    defer { buf.deallocate() }
                    var at = 0
                    while at < pruned.count {
                        let n = min(piece, pruned.count - at)
                        PruneMask.apply(pruned, from: at, src: src.baseAddress! + at * size, dst: buf, count: n, size: size)
                        try writer.write(tensor: i, at: at * size, UnsafeRawBufferPointer(start: buf, count: n * size))
                        at += n
                    }
                    if let cut, nm == nil {
                        row += metric("threshold", Double(cut.threshold))
                    } else if nm == nil && scope == .tensor, case let k = Int(Double(sc.count) * sparsity), k > 0 && k < sc.count {
                        // The k-th smallest score: everything below it was pruned.
                        row += metric("threshold", Double(sc.withUnsafeBufferPointer { Sparsifier.kthLargestMagnitude($0, sc.count - k + 1) }))
                    }
                }
                ckpt.release(e)
                if let mw = maskWriter {
                    let keep = pruned.map { UInt8($0 ? 0 : 1) }  // true = kept
                    try keep.withUnsafeBytes { try mw.write(tensor: maskIndex[e.name]!, $0) }
                }
                // Zeros after: the pruned entries plus kept ones that were already zero.
                var zeros = 0, prunedCount = 0
                for k in w.indices {
                    let p = pruned[k] ? 1 : 0
                    prunedCount &+= p
                    zeros &+= p | (w[k] == 0 ? 1 : 0)
                }
                let requested = nm.map { Double($0.m - $0.n) / Double($0.m) } ?? sparsity
                row += [("requested_sparsity", .double(requested)), ("pruned", .int(prunedCount)),
                        ("achieved_sparsity", .double(w.isEmpty ? 0 : Double(zeros) / Double(w.count)))]
                // ||removed|| / ||w||, and with statistics Σ removed² a_j / Σ w² a_j, in one pass.
                var wSq = 0.0, rSq = 0.0, num = 0.0, den = 0.0
                let a = cs[e.name]
                if removed == nil && a == nil {   // the common case, in SIMD
                    wSq = VectorMath.dot(w, w)
                    rSq = PruneMask.prunedSquares(w, pruned)
                } else {
                    wSq = VectorMath.dot(w, w)
                    rSq = removed.map { VectorMath.dot($0, $0) } ?? PruneMask.prunedSquares(w, pruned)
                    if let a {
                        var k = 0
                        while k < w.count {   // row by row, the removed part read in place
                            for c in 0..<cols {
                                let x = Double(w[k + c])
                                let d = removed.map { Double($0[k + c]) } ?? (pruned[k + c] ? x : 0)
                                num += d * d * a[c]; den += x * x * a[c]
                            }
                            k += cols
                        }
                    }
                }
                row += metric("relative_norm_removed", wSq > 0 ? (rSq / wSq).squareRoot() : 0)
                if a != nil { row += metric("estimated_relative_output_error", den > 0 ? (num / den).squareRoot() : 0) }
                return .object(row)
            }
            try writer.commit()
            try maskWriter?.commit()
        } catch {
            writer.abort()
            maskWriter?.abort()
            throw error
        }
        let copied = try out.copyAuxiliaryFiles(from: ckpt)
        timer.lap("prune")
        report.inputs = inputs.map(RunReport.describe)
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("masks", maskOut.map { .string($0) } ?? .null), ("copied", .array(copied.map { .string($0) }))])
        report.parameters = [("method", .string(method.rawValue)), ("sparsity", .double(sparsity)), ("scope", .string(scope.rawValue)),
                             ("nm", nm.map { .string("\($0.n):\($0.m)") } ?? .null), ("rank", rank.map { .int($0) } ?? .null),
                             ("stats", statsPath.map { .string($0) } ?? .null), ("fallback_magnitude", .bool(fallbackMagnitude))]
        if method == .principal { report.parameters += svd.parameters }
        report.tensors = rows
        let targetRows = rows.filter { $0["target"] == .bool(true) }
        let prunedTotal = targetRows.compactMap { $0["pruned"]?.doubleValue }.reduce(0, +)
        let targetElements = targets.reduce(0) { $0 + $1.info.count }
        report.summary = [("targets", .int(targets.count)), ("tensors", .int(rows.count)), ("pruned", .double(prunedTotal)),
                          ("achieved_sparsity", .double(targetElements > 0 ? prunedTotal / Double(targetElements) : 0)),
                          ("bytes", .uint(ckpt.totalBytes))]
        report.timing = timer.phases
        try out.finish(report, reportPath: settings.reportPath)
        return report
    }
}

/// The global cut: the k-th smallest score over all targets (k = floor(total * sparsity)), with the
/// entries equal to it pruned in target order, then index order, until k are pruned.
struct GlobalCut: Sendable {
    let threshold: Float
    /// For each target: how many entries equal to the threshold it prunes.
    let ties: [Int]

    init(_ sources: [@Sendable () throws -> [Float]], sparsity: Double, threads: Int) throws {
        let all = sources
        let total = try Engine.map(count: all.count, threads: threads) { try all[$0]().count }.reduce(0, +)
        let k = Int(Double(total) * sparsity)
        guard k > 0 else { threshold = -1; ties = Array(repeating: 0, count: all.count); return }
        // Radix selection over every target's scores: k-th smallest = (total - k + 1)-th largest.
        var remaining = total - k + 1
        var prefix: UInt32 = 0
        for (shift, width) in [(UInt32(20), UInt32(11)), (10, 10), (0, 10)] {
            let mask = UInt32((1 << width) - 1), fixedShift = shift + width, pre = prefix
            let hists = try Engine.map(count: all.count, threads: threads) { i -> [Int] in
                var h = [Int](repeating: 0, count: 1 << Int(width))
                for s in try all[i]() {
                    let b = s.bitPattern & 0x7FFF_FFFF
                    if fixedShift >= 31 || b >> fixedShift == pre { h[Int((b >> shift) & mask)] += 1 }
                }
                return h
            }
            var hist = [Int](repeating: 0, count: 1 << Int(width))
            for h in hists { for d in h.indices { hist[d] += h[d] } }
            var digit = Int(mask)
            while hist[digit] < remaining { remaining -= hist[digit]; digit -= 1 }
            prefix = prefix << width | UInt32(digit)
        }
        let t = Float(bitPattern: prefix)
        threshold = t
        let counts = try Engine.map(count: all.count, threads: threads) { i -> (Int, Int) in
            let s = try all[i]()
            return (s.filter { abs($0) < t }.count, s.filter { abs($0) == t }.count)
        }
        var budget = k - counts.reduce(0) { $0 + $1.0 }
        ties = counts.map { c in let take = min(c.1, max(0, budget)); budget -= take; return take }
    }

    func mask(tensor i: Int, _ s: UnsafeBufferPointer<Float>) -> [Bool] {
        var left = ties[i]
        return s.map { x in
            let v = abs(x)  // scores are read as magnitudes
            if v < threshold { return true }
            if v == threshold && left > 0 { left -= 1; return true }
            return false
        }
    }
}
