import CMerge
import Linalg

/// The task-arithmetic pipeline over a tensor too large to hold decoded (a 128k x 8k embedding is
/// 4 GB of f32 per input): the inputs are decoded in blocks of whole rows, each sparsifier's
/// global decision is made by passes over the blocks first (`BlockSparsifier`; for mergekit's L1
/// rescale one more pass, shared by the models, that sums each delta before and after dropping), then one pass
/// sparsifies, elects signs, sums and hands the result to the writer. Memory is a few blocks per
/// input; the output is bit for bit the whole-tensor pipeline's (`TaskArithmeticPipeline.run`).
struct StreamedTaskArithmetic {
    /// Decodes entries [start, start + count) of one input to f32.
    typealias Reader = (_ start: Int, _ count: Int, _ into: UnsafeMutablePointer<Float>) -> Void

    struct Task {
        let read: Reader
        /// Values already deltas (a task vector), else a model from which the base is subtracted.
        let isDelta: Bool
        let weight, density, gamma, epsilon: Double
    }

    let pipeline: TaskArithmeticPipeline
    let shape: [Int]
    let base: Reader
    let tasks: [Task]
    let seed: UInt64
    let tensor: String
    /// Entries per block at most (rounded down to whole rows, at least one row).
    let blockEntries: Int

    /// Blocks of 2^16 entries (256 KiB of f32 per buffer: the M + 3 of them stay in a core's L2
    /// between the steps of a pass), or smaller when the caller's threshold is smaller (tests use
    /// that to cut rows into blocks).
    static func blockEntries(threshold: Int) -> Int { min(threshold, 1 << 16) }

    /// The largest tensor whose random kept set is remembered between the L1 probe and the last
    /// pass: 2^27 entries, a 16 MiB mask per model (a 1 GiB mask would defeat streaming, so larger
    /// tensors draw their kept set twice instead; same bits either way).
    static let maskLimit = 1 << 27

    /// What the pass measured: the pipeline's figures, the geometry of the models' deltas (models
    /// only, as `VectorMath.deltaSums` pairs them) and ||out - base||², ||base||².
    struct Totals {
        var kept: [Double]
        var signConflicts: Double?
        var deltaSquares: [Double]
        var deltaDots: [Double]
        var changeSquares = 0.0
        var baseSquares = 0.0
    }

    var count: Int { shape.reduce(1, *) }
    /// Entries per block: whole rows, at most `blockEntries` unless one row is longer.
    var blockLength: Int {
        let rowLength = BlockSparsifier.rowLength(shape, count: count)
        return min(count, max(1, blockEntries / rowLength) * rowLength)
    }

    /// Runs the pipeline; `write` receives base + combined delta, block by block in order.
    func run(write: (_ start: Int, _ values: UnsafeBufferPointer<Float>) throws -> Void) throws -> Totals {
        let n = count, M = tasks.count
        let rowLength = BlockSparsifier.rowLength(shape, count: n)
        let block = max(1, blockLength)
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: block * (M + 3))
        defer { buf.deallocate() }
        let baseBuf = buf, outBuf = buf + block, rawBuf = buf + 2 * block
        func deltas(_ m: Int) -> UnsafeMutablePointer<Float> { buf + (3 + m) * block }

        /// Task m's delta for [start, start + len) into `dst`; the base block must be in `baseBuf`.
        func readDelta(_ m: Int, _ start: Int, _ len: Int, into dst: UnsafeMutablePointer<Float>) {
            tasks[m].read(start, len, dst)
            if !tasks[m].isDelta { for j in 0..<len { dst[j] -= baseBuf[j] } }
        }
        /// Calls `body` with task m's delta, block by block (one selection pass).
        func forEachDeltaBlock(_ m: Int, _ body: (UnsafeBufferPointer<Float>) -> Void) {
            var start = 0
            while start < n {
                let len = min(block, n - start)
                base(start, len, baseBuf)
                readDelta(m, start, len, into: rawBuf)
                body(UnsafeBufferPointer(start: rawBuf, count: len))
                start += len
            }
        }

        var sparsifiers: [BlockSparsifier?] = []
        var l1Factors = [Float?](repeating: nil, count: M)
        var masks = [(bits: UnsafeMutablePointer<UInt8>, kept: Int)?](repeating: nil, count: M)
        defer { for case let mask? in masks { mask.bits.deallocate() } }
        for m in 0..<M {
            guard let kind = pipeline.sparsifier else { sparsifiers.append(nil); continue }
            let t = tasks[m]
            let rng = SeededRNG(seed: seed, stream: tensor, block: UInt64(m))
            let s = try BlockSparsifier(kind, count: n, rowLength: rowLength, density: t.density, gamma: t.gamma, epsilon: t.epsilon,
                                        rescale: pipeline.rescale, rng: rng, tensor: tensor, sample: { start, len, into in
                                            base(start, len, baseBuf)
                                            readDelta(m, start, len, into: into)
                                        }) { forEachDeltaBlock(m, $0) }
            sparsifiers.append(s)
        }
        // The L1 factor needs the kept set before the pass that uses it: one probe pass draws the
        // kept sets of every model that rescales (the base decoded once a block for all of them)
        // and remembers each as bits, up to `maskLimit` entries, so the last pass need not draw
        // or rank again. Each model's probe is its own copy of its sparsifier: the same draws,
        // in the same order, as a pass of its own.
        let probing = (0..<M).filter { sparsifiers[$0]?.rescalesL1 == true }
        if !probing.isEmpty {
            var probes = probing.map { sparsifiers[$0]! }
            var before = probing.map { _ in VectorMath.AbsSum(count: n) }, after = before
            var kept = [Int](repeating: 0, count: probing.count)
            let remember = n <= StreamedTaskArithmetic.maskLimit
            let bits = probing.map { _ in remember ? UnsafeMutablePointer<UInt8>.allocate(capacity: (n + 7) / 8) : nil }
            var start = 0
            while start < n {
                let len = min(block, n - start)
                base(start, len, baseBuf)
                for (k, m) in probing.enumerated() {
                    let p = deltas(m)   // free until the last pass
                    readDelta(m, start, len, into: p)
                    before[k].add(p, count: len, at: start)
                    kept[k] += probes[k].apply(p, count: len)
                    after[k].add(p, count: len, at: start)
                    if let mask = bits[k] { wt_mask_store(p, len, mask, start) }
                }
                start += len
            }
            for (k, m) in probing.enumerated() {
                l1Factors[m] = BlockSparsifier.l1Factor(original: before[k].total, kept: after[k].total)
                if let mask = bits[k] { masks[m] = (mask, kept[k]) }
            }
        }

        let models = tasks.indices.filter { !tasks[$0].isDelta }
        var totals = Totals(kept: Array(repeating: 0, count: M), signConflicts: nil,
                            deltaSquares: Array(repeating: 0, count: models.count), deltaDots: Array(repeating: 0, count: models.count * (models.count - 1) / 2))
        var conflicts = 0
        let w = tasks.map(\.weight)
        let total = w.reduce(0, +)
        if !pipeline.electSign && pipeline.normalize && abs(total) < 1e-8 {
            throw MergeError("the weights sum to \(total): normalize would divide by zero")
        }
        let scale = (pipeline.normalize ? 1 / total : 1) * pipeline.lambda   // as TaskArithmeticPipeline.run associates it
        let scaled = w.map { $0 * scale }
        // Sign election on models (TIES, DARE-TIES, DELLA: the common case), every model's kept
        // set a magnitude cut or remembered by the probe, at most 8 models: one fused pass per
        // block (`TaskArithmeticPipeline.tiesBlock`).
        var fused: [wt_ties_model]? = nil
        if pipeline.electSign && models.count == M && (1...8).contains(M) {
            var specs: [wt_ties_model] = []
            for m in 0..<M {
                let scaled: Int32 = l1Factors[m] != nil ? 1 : 0, factor = l1Factors[m] ?? 1
                if let mask = masks[m] {
                    specs.append(wt_ties_model(cut: 0, left: 0, mask: UnsafePointer(mask.bits), scaled: scaled, factor: factor))
                } else if let c = sparsifiers[m] == nil ? (threshold: 0, ties: Int.max) : sparsifiers[m]!.cut {
                    specs.append(wt_ties_model(cut: c.threshold, left: c.ties, mask: nil, scaled: scaled, factor: factor))
                }
            }
            if specs.count == M { fused = specs }
        }
        var start = 0
        while start < n {
            let len = min(block, n - start)
            base(start, len, baseBuf)
            if var specs = fused {
                for m in 0..<M { tasks[m].read(start, len, deltas(m)) }
                let f = TaskArithmeticPipeline.tiesBlock((0..<M).map { UnsafePointer(deltas($0)) }, base: baseBuf, count: len, models: &specs,
                                                         at: start, weights: w, normalize: pipeline.normalize, lambda: pipeline.lambda, into: outBuf)
                fused = specs
                for m in 0..<M { totals.kept[m] += Double(f.kept[m]) }   // a remembered set's count is the probe's (below)
                for i in f.squares.indices { totals.deltaSquares[i] += f.squares[i] }
                for i in f.dots.indices { totals.deltaDots[i] += f.dots[i] }
                conflicts += f.conflicts
                totals.changeSquares += f.change
                totals.baseSquares += f.baseSquares
                try write(start, UnsafeBufferPointer(start: outBuf, count: len))
                start += len
                continue
            }
            for m in 0..<M {
                let d = deltas(m)
                tasks[m].read(start, len, d)
            }
            if !models.isEmpty {   // the geometry of the models' deltas, and the deltas themselves
                let g = VectorMath.deltaSumsSubtracting(models.map { deltas($0) }, base: baseBuf, count: len)
                for i in g.squares.indices { totals.deltaSquares[i] += g.squares[i] }
                for i in g.dots.indices { totals.deltaDots[i] += g.dots[i] }
            }
            for m in 0..<M {
                let d = deltas(m)
                if let mask = masks[m] {   // the probe's kept set (its count is the probe's)
                    wt_mask_apply(d, len, mask.bits, start)
                } else if var s = sparsifiers[m] {
                    totals.kept[m] += Double(s.apply(d, count: len))
                    sparsifiers[m] = s
                } else {
                    totals.kept[m] += Double(len)
                }
                if let f = l1Factors[m] { for j in 0..<len { d[j] *= f } }
            }
            let ptrs = (0..<M).map { UnsafePointer(deltas($0)) }
            if pipeline.electSign {
                conflicts += TaskArithmeticPipeline.electAndSum(ptrs, weights: w, into: outBuf, count: len,
                                                                normalize: pipeline.normalize, lambda: pipeline.lambda)
            } else {
                for j in 0..<len {
                    var s = 0.0
                    for m in 0..<M { s += scaled[m] * Double(ptrs[m][j]) }
                    outBuf[j] = Float(s)
                }
            }
            let sums = VectorMath.addBase(outBuf, baseBuf, count: len)
            totals.changeSquares += sums.change
            totals.baseSquares += sums.baseSquares
            try write(start, UnsafeBufferPointer(start: outBuf, count: len))
            start += len
        }
        for m in 0..<M { if let mask = masks[m] { totals.kept[m] = Double(mask.kept) } }
        totals.kept = totals.kept.map { n > 0 ? $0 / Double(n) : 1 }
        if pipeline.electSign { totals.signConflicts = n > 0 ? Double(conflicts) / Double(n) : nil }
        return totals
    }
}
