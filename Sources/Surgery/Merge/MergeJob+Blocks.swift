import SafeTensors

/// Merges of tensors above `JobSettings.blockAbove` entries in blocks, for the methods that would
/// otherwise decode every input whole to f32: the same bytes as the whole-tensor merge, memory a
/// few blocks per input: the task-arithmetic family, slerp and nearswap here, the others through
/// `StreamedMergeMethod` (every method but passthrough, which copies).
extension MergeJob {
    /// The report row of a tensor merged in blocks, or nil when its method has no blocked form.
    static func streamBlocks(_ item: MergePlan.Item, plan: MergePlan, seed: UInt64, writer: CheckpointWriter, index: Int,
                             blockAbove: Int) throws -> JSONValue? {
        switch plan.method {
        case let method as TaskArithmeticMerge:
            return try streamTaskArithmetic(item, method: method, plan: plan, seed: seed, writer: writer, index: index, blockEntries: blockAbove)
        case is SlerpMerge:
            return try streamSlerp(item, plan: plan, writer: writer, index: index, blockEntries: blockAbove)
        case is NearSwapMerge:
            return try streamNearSwap(item, plan: plan, writer: writer, index: index, blockEntries: blockAbove)
        case let method as StreamedMergeMethod:
            return try streamMethod(item, method: method, plan: plan, writer: writer, index: index, blockEntries: blockAbove)
        default:
            return nil
        }
    }

    /// The other methods through `StreamedMergeMethod`; the report's delta geometry takes one more pass.
    static func streamMethod(_ item: MergePlan.Item, method: StreamedMergeMethod, plan: MergePlan, writer: CheckpointWriter, index: Int,
                             blockEntries: Int) throws -> JSONValue {
        let base = item.base.map { blockReader(plan, $0) }
        let c = StreamedMergeContext(tensor: item.output, shape: item.shape.map { Int(clamping: $0) }, base: base,
                                     models: item.models.map { blockReader(plan, $0) }, global: item.global, perModel: item.perModel,
                                     blockEntries: StreamedTaskArithmetic.blockEntries(threshold: blockEntries))
        let M = c.models.count, size = item.dtype.size!
        var squares = [Double](repeating: 0, count: M), dots = [Double](repeating: 0, count: M * (M - 1) / 2)
        if base != nil {
            c.pass { _, len, b, x in
                let g = VectorMath.deltaSums(x.map { UnsafePointer($0) }, base: b!, count: len)
                for i in 0..<M { squares[i] += g.squares[i] }
                for i in dots.indices { dots[i] += g.dots[i] }
            }
        }
        let enc = UnsafeMutableRawPointer.allocate(byteCount: max(1, c.blockLength) * size, alignment: 64)
        let baseBlock = UnsafeMutablePointer<Float>.allocate(capacity: max(1, c.blockLength))
        defer { enc.deallocate(); baseBlock.deallocate() }
        var change = 0.0, baseSquares = 0.0
        let metrics: [(String, JSONValue)]
        do {
            metrics = try method.mergeStreamed(c) { start, values in
                let len = values.count
                if let base {
                    base(start, len, baseBlock)
                    change += VectorMath.deltaSums([values.baseAddress!], base: baseBlock, count: len).squares[0]
                    baseSquares += VectorMath.dot(baseBlock, baseBlock, len)
                }
                Codec.encode(values.baseAddress!, count: len, as: item.dtype, into: enc)
                try writer.write(tensor: index, at: start * size, UnsafeRawBufferPointer(start: enc, count: len * size))
            }
        } catch let e as MergeError {
            throw FormatError(file: plan.checkpoints[item.models[0].model].path, tensor: item.output, e.description)
        }
        release(plan, (item.base.map { [$0] } ?? []) + item.models)
        var row = rowHeader(item)
        if base != nil { row += geometryMetrics(squares: squares, dots: dots, change: change, baseSquares: baseSquares) }
        return .object(row + metrics + [("blocked", .bool(true))])
    }

    /// A task-arithmetic merge of a tensor above `blockEntries` entries, in row blocks (the same
    /// bits as the whole-tensor merge, a few blocks of memory per input).
    static func streamTaskArithmetic(_ item: MergePlan.Item, method: TaskArithmeticMerge, plan: MergePlan, seed: UInt64,
                                     writer: CheckpointWriter, index: Int, blockEntries: Int) throws -> JSONValue {
        let cps = plan.checkpoints
        guard let baseInput = item.base else { throw MergeError("\(method.name) needs a base model") }
        func reader(_ i: MergePlan.Input) -> StreamedTaskArithmetic.Reader { blockReader(plan, i) }
        let p = try method.parameters(global: item.global, perModel: item.perModel)
        let tasks = item.models.indices.map { m in
            StreamedTaskArithmetic.Task(read: reader(item.models[m]), isDelta: false, weight: p.weights[m], density: p.densities[m],
                                        gamma: p.gammas[m], epsilon: p.epsilons[m])
        }
        let job = StreamedTaskArithmetic(pipeline: p.pipeline, shape: item.shape.map { Int(clamping: $0) }, base: reader(baseInput), tasks: tasks,
                                         seed: seed, tensor: item.output, blockEntries: StreamedTaskArithmetic.blockEntries(threshold: blockEntries))
        let outSize = item.dtype.size!
        let enc = UnsafeMutableRawPointer.allocate(byteCount: max(1, job.blockLength) * outSize, alignment: 64)
        defer { enc.deallocate() }
        let totals: StreamedTaskArithmetic.Totals
        do {
            totals = try job.run { start, values in
                Codec.encode(values.baseAddress!, count: values.count, as: item.dtype, into: enc)
                try writer.write(tensor: index, at: start * outSize, UnsafeRawBufferPointer(start: enc, count: values.count * outSize))
            }
        } catch let e as MergeError {
            throw FormatError(file: cps[item.models[0].model].path, tensor: item.output, e.description)
        }
        release(plan, [baseInput] + item.models)
        var row = rowHeader(item)
        row += geometryMetrics(squares: totals.deltaSquares, dots: totals.deltaDots, change: totals.changeSquares, baseSquares: totals.baseSquares)
        if method.sparsifier != nil { row.append(("kept_fraction", .array(totals.kept.map { .double($0) }))) }
        if let sc = totals.signConflicts { row.append(("sign_conflict_fraction", .double(sc))) }
        if job.count > blockEntries { row.append(("blocked", .bool(true))) }   // above the threshold (smaller ones are one block or a few)
        return .object(row)
    }

    /// Slerp in two passes: ||v0||², ||v1||² and <v0, v1> block by block (the bits of the whole-tensor
    /// sums), then the linear combination those give, streamed like a linear merge.
    static func streamSlerp(_ item: MergePlan.Item, plan: MergePlan, writer: CheckpointWriter, index: Int, blockEntries: Int) throws -> JSONValue {
        let inputs = [item.base!, item.models[0]]
        let read = inputs.map { blockReader(plan, $0) }
        let n = Int(item.shape.reduce(1, *)), block = StreamedTaskArithmetic.blockEntries(threshold: blockEntries)
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: 2 * block)
        defer { buf.deallocate() }
        var s00 = VectorMath.DotSum(count: n), s11 = s00, s01 = s00
        var start = 0
        while start < n {
            let len = min(block, n - start)
            read[0](start, len, buf); read[1](start, len, buf + block)
            s00.add(buf, buf, count: len, at: start); s11.add(buf + block, buf + block, count: len, at: start)
            s01.add(buf, buf + block, count: len, at: start)
            start += len
        }
        let k = SlerpMerge.coefficients(squares0: s00.total, squares1: s11.total, dot: s01.total, t: item.global["t"]?.double ?? .nan)
        return try streamLinear(item, coeffs: [k.a, k.b], plan: plan, writer: writer, index: index,
                                metrics: [("cosine", .double(k.cosine)), ("blocked", .bool(true))])
    }

    /// Nearswap works entry by entry: one pass.
    static func streamNearSwap(_ item: MergePlan.Item, plan: MergePlan, writer: CheckpointWriter, index: Int, blockEntries: Int) throws -> JSONValue {
        let inputs = [item.base!, item.models[0]]
        let read = inputs.map { blockReader(plan, $0) }
        let n = Int(item.shape.reduce(1, *)), block = StreamedTaskArithmetic.blockEntries(threshold: blockEntries)
        let t = item.global["t"]?.double ?? .nan, size = item.dtype.size!
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: 3 * block)
        let enc = UnsafeMutableRawPointer.allocate(byteCount: block * size, alignment: 64)
        defer { buf.deallocate(); enc.deallocate() }
        var change = 0.0, baseSquares = 0.0, deltaSquares = 0.0
        var start = 0
        while start < n {
            let len = min(block, n - start)
            let a = buf, b = buf + block, out = buf + 2 * block
            read[0](start, len, a); read[1](start, len, b)
            NearSwapMerge.swap(a, b, count: len, t: t, into: out)
            deltaSquares += VectorMath.deltaSums([UnsafePointer(b)], base: a, count: len).squares[0]
            change += VectorMath.deltaSums([UnsafePointer(out)], base: a, count: len).squares[0]
            baseSquares += VectorMath.dot(a, a, len)
            Codec.encode(out, count: len, as: item.dtype, into: enc)
            try writer.write(tensor: index, at: start * size, UnsafeRawBufferPointer(start: enc, count: len * size))
            start += len
        }
        release(plan, inputs)
        return .object(rowHeader(item) + geometryMetrics(squares: [deltaSquares], dots: [], change: change, baseSquares: baseSquares)
                       + [("blocked", .bool(true))])
    }

    /// One input's block reader (`blockReader` of TensorDecoding).
    static func blockReader(_ plan: MergePlan, _ i: MergePlan.Input) -> StreamedTaskArithmetic.Reader {
        let cp = plan.checkpoints[i.model]
        return Surgery.blockReader(cp, cp.entry(i.tensor)!)
    }

    static func release(_ plan: MergePlan, _ inputs: [MergePlan.Input]) {
        for i in inputs { plan.checkpoints[i.model].release(plan.checkpoints[i.model].entry(i.tensor)!) }
    }
}
