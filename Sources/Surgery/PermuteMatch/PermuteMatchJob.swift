import Linalg
import SafeTensors

/// `wtool permute-match`: finds the permutations of B's hidden units that bring B closest to the
/// reference A (weight matching), or applies saved ones, and writes B re-indexed: pure gathers in
/// B's own dtype, so the output computes exactly B's function.
public struct PermuteMatchJob: Sendable {
    public var settings = JobSettings()
    /// A (the reference); nil with `apply`.
    public var reference: String?
    /// B, the model to re-index.
    public var model: String
    public var output: String?
    /// A spec file; nil infers one.
    public var specPath: String?
    public var seed: UInt64 = 0
    public var maxSweeps = 100
    public var permOut: String?
    /// A permutation file to apply instead of matching.
    public var apply: String?
    /// Run both models on random inputs afterwards (MLP chains).
    public var verify = false

    public init(model: String) { self.model = model }

    // MARK: - Spec

    /// The spec to use for `c`: the file given, checked against the built-in one when wtool knows
    /// the model, or the inferred one. Returns it bound to `c`'s tensors.
    func spec(for c: Checkpoint, warnings: inout [String]) throws -> BoundSpec {
        guard let specPath else {
            return try BoundSpec(try BuiltinSpecs.infer(c), entries: c.entries, path: c.path, specSource: "\(c.path) (inferred spec)")
        }
        let bound = try BoundSpec(try SpecFileReader.load(specPath), entries: c.entries, path: c.path, specSource: specPath)
        if let builtin = try? BuiltinSpecs.infer(c), let ref = try? BoundSpec(builtin, entries: c.entries, path: c.path, specSource: "built-in") {
            try SpecSymmetryCheck.check(bound, against: ref, source: specPath, seed: seed)
        } else {
            warnings.append("no built-in spec for \(c.path): the spec file's permutations cannot be checked against the model's symmetries")
        }
        return bound
    }

    /// The spec as `--print-spec` shows it (the file format).
    public func printSpec() throws -> String {
        let c = try Checkpoint(path: model)
        var warnings: [String] = []
        return try spec(for: c, warnings: &warnings).spec.json.pretty()
    }

    // MARK: - Match or apply

    @discardableResult
    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let b = try Checkpoint(path: model)
        report.warnings += b.warnings
        let bound: BoundSpec
        var outcome: MatchOutcome
        var a: Checkpoint? = nil
        if let apply {
            let file = try PermutationFile.read(apply)
            bound = try BoundSpec(file.spec, entries: b.entries, path: b.path, specSource: apply)
            try file.check(bound, path: apply)
            outcome = MatchOutcome(perms: bound.identity.merging(file.perms) { $1 })
        } else {
            guard let reference else { throw UsageError("--reference A is required (or --apply P.json)") }
            let ref = try Checkpoint(path: reference)
            report.warnings += ref.warnings
            try PermuteMatchJob.checkSameTensors(ref, b)
            bound = try spec(for: b, warnings: &report.warnings)
            outcome = MatchOutcome(perms: bound.identity)
            a = ref
        }
        report.warnings += bound.warnings
        if verify && bound.spec.architecture != "mlp" { throw UsageError("--verify runs MLP chains only; use --self-test for other specs") }
        guard let output else { throw UsageError("-o OUT is required") }
        var inputs = [b]
        if let a { inputs.append(a) }
        let plan = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: inputs, part: settings.part)
        timer.lap("plan")

        var before: Distances? = nil
        if let a {
            let names = bound.tensors.map(\.name)
            let at = CheckpointTensors(a, names: names), bt = CheckpointTensors(b, names: names)
            before = try Distances.measure(bound, at, bt, perms: nil, threads: settings.threads, checkFinite: (a.path, b.path))
            timer.lap("measure")
            let matcher = WeightMatcher(spec: bound, a: at, b: bt, seed: seed, maxSweeps: maxSweeps, threads: settings.threads)
            outcome = try matcher.run()
            timer.lap("match")
        }

        // ---- write B re-indexed
        let outputs = b.entries.map { OutputTensor(name: $0.name, dtype: $0.info.dtype, shape: $0.info.shape) }
        let writer = try plan.writer(tensors: outputs)
        let progress = Progress(total: outputs.count, label: "permute", quiet: settings.quiet)
        let perms = outcome.perms
        let rows: [JSONValue]
        do {
            rows = try Engine.map(count: outputs.count, threads: settings.threads, progress: progress) { t in
                guard writer.owns(t) else { return .object([("name", .string(outputs[t].name)), ("part", .string("another"))]) }
                return try PermuteMatchJob.writeTensor(b, bound, t, perms, writer)
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        let copied = try plan.copyAuxiliaryFiles(from: b)
        if let permOut { try PermutationFile(spec: bound.spec, perms: perms).write(to: permOut) }
        timer.lap("write")

        // ---- measure, verify, report
        var summary: [(String, JSONValue)] = [("architecture", .string(bound.spec.architecture)), ("spaces", .int(bound.instances.count))]
        if let a, let before {
            let names = bound.tensors.map(\.name)
            let after = try Distances.measure(bound, CheckpointTensors(a, names: names), CheckpointTensors(b, names: names),
                                              perms: perms, threads: settings.threads, checkFinite: nil)
            summary += [("sweeps", .int(outcome.sweeps)), ("converged", .bool(outcome.converged)),
                        ("cost_terms_reused", .int(outcome.cachedTerms)), ("cost_gflop", .double(outcome.costFlops / 1e9))]
            summary += metric("l2_before", before.l2) + metric("l2_after", after.l2)
            summary += metric("objective_before", before.objective) + metric("objective_after", after.objective)
            timer.lap("measure_after")
        }
        summary.append(("space_details", .array(PermuteMatchJob.spaceRows(bound, outcome))))
        if verify {
            let out = try Checkpoint(path: output)
            let r = MLPCheck.compare(b, out, layers: MLPCheck.layers(of: bound.spec), seed: seed)
            summary += [("verify_inputs", .int(r.inputs))] + metric("verify_max_abs_logit_difference", r.maxAbsDifference) + metric("verify_max_abs_logit", r.maxAbsLogit)
            timer.lap("verify")
            if !(r.maxAbsDifference <= 1e-4 * max(1, r.maxAbsLogit)) {
                throw FormatError(file: output, "--verify: the output's logits differ from B's by \(r.maxAbsDifference) (largest logit \(r.maxAbsLogit)): the spec does not describe this model")
            }
        }
        report.inputs = ([a].compactMap { $0 } + [b]).map { RunReport.describe($0) }
        report.parameters = [("mode", .string(apply == nil ? "match" : "apply")), ("spec", .string(specPath ?? apply ?? "auto")),
                             ("seed", .uint(seed)), ("max_sweeps", .int(maxSweeps)), ("verify", .bool(verify))]
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) })), ("permutations", permOut.map { .string($0) } ?? .null)])
        report.tensors = rows
        report.summary = summary
        report.timing = timer.phases + [("cost_s", .double(outcome.costSeconds)), ("lap_s", .double(outcome.lapSeconds))]
        try plan.finish(report, reportPath: settings.reportPath)
        return report
    }

    /// A and B must hold the same tensors with the same shapes (dtypes may differ).
    static func checkSameTensors(_ a: Checkpoint, _ b: Checkpoint) throws {
        for e in b.entries {
            guard let f = a.entry(e.name) else { throw FormatError(file: a.path, tensor: e.name, "B (\(b.path)) holds this tensor, the reference does not") }
            guard f.info.shape == e.info.shape else {
                throw FormatError(file: a.path, tensor: e.name, "shape \(f.info.shape) in the reference, \(e.info.shape) in \(b.path)")
            }
        }
        for e in a.entries where b.entry(e.name) == nil {
            throw FormatError(file: b.path, tensor: e.name, "the reference (\(a.path)) holds this tensor, B does not")
        }
    }

    /// Re-indexes one tensor of B in its own dtype.
    static func writeTensor(_ b: Checkpoint, _ spec: BoundSpec, _ t: Int, _ perms: [String: [Int]], _ writer: CheckpointWriter) throws -> JSONValue {
        let e = b.entry(spec.tensors[t].name)!
        let index = spec.indexVectors(tensor: t, perms)
        b.willNeed(e)
        let src = b.bytes(e)
        if index.allSatisfy({ $0 == nil }) || src.isEmpty {
            try writer.write(tensor: t, src)
        } else {
            let dst = UnsafeMutableRawPointer.allocate(byteCount: src.count, alignment: 64)
            defer { dst.deallocate() }
            Gather.gather(src.baseAddress!, into: dst, shape: spec.tensors[t].shape, elementSize: e.info.dtype.size!, index)
            try writer.write(tensor: t, UnsafeRawBufferPointer(start: dst, count: src.count))
        }
        b.release(e)
        let axes: [JSONValue] = spec.tensors[t].axes.map { ax in
            guard let ax, !ax.isFixed else { return .null }
            return .array(ax.segments.map { seg in .array(seg.map { $0.space.map { .string($0) } ?? .int($0.size) }) })
        }
        return .object([("name", .string(e.name)), ("shape", .array(e.info.shape.map { .uint($0) })),
                        ("dtype", .string(e.info.dtype.rawValue)), ("axes", .array(axes)),
                        ("permuted", .bool(index.contains { $0 != nil }))])
    }

    /// Per space: size, steps with their gains, fraction of units moved.
    static func spaceRows(_ spec: BoundSpec, _ outcome: MatchOutcome) -> [JSONValue] {
        var steps: [String: [MatchStep]] = [:]
        for s in outcome.steps { steps[s.space, default: []].append(s) }
        return spec.instances.map { inst in
            let p = outcome.perms[inst.name]!
            let moved = p.enumerated().filter { $0.offset != $0.element }.count
            let st = steps[inst.name] ?? []
            return .object([
                ("name", .string(inst.name)), ("size", .int(inst.size)),
                ("steps", .int(st.filter { !$0.skipped }.count)),
                ("gains", .array(st.map { .double($0.gain) })),
                ("skipped", .array(st.map { .bool($0.skipped) })),
                ("moved_fraction", .double(Double(moved) / Double(max(1, inst.size)))),
            ])
        }
    }
}

/// sum_t <A_t, pi(B_t)> and ||A - pi(B)||, over every floating-point tensor, in f64.
struct Distances: Sendable {
    var objective = 0.0
    var squared = 0.0
    var l2: Double { squared.squareRoot() }

    static func measure(_ spec: BoundSpec, _ a: CheckpointTensors, _ b: CheckpointTensors, perms: [String: [Int]]?,
                        threads: Int, checkFinite: (String, String)?) throws -> Distances {
        let parts = try Engine.map(count: spec.tensors.count, threads: threads) { t -> (Double, Double) in
            guard spec.tensors[t].dtype.isFloatingPoint else { return (0, 0) }
            let av = a.floats(t)
            var bv = b.floats(t)
            if let checkFinite {
                let name = spec.tensors[t].name
                if !av.allSatisfy({ $0.isFinite }) { throw FormatError(file: checkFinite.0, tensor: name, "holds NaN or infinite values; weight matching needs finite weights") }
                if !bv.allSatisfy({ $0.isFinite }) { throw FormatError(file: checkFinite.1, tensor: name, "holds NaN or infinite values; weight matching needs finite weights") }
            }
            if let perms { bv = Gather.floats(bv, shape: spec.tensors[t].shape, spec.indexVectors(tensor: t, perms)) }
            var dot = 0.0, sq = 0.0
            for (x, y) in zip(av, bv) {
                let dx = Double(x), dy = Double(y)
                dot += dx * dy
                sq += (dx - dy) * (dx - dy)
            }
            return (dot, sq)
        }
        var d = Distances()
        for (dot, sq) in parts { d.objective += dot; d.squared += sq }
        return d
    }
}
