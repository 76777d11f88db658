import Linalg
import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

extension PermuteMatchJob {
    /// `--self-test`: permutes the model randomly by its spec (every space, seeded), matches the
    /// permuted copy back to the model, and requires the model back bit for bit. Nothing is written
    /// besides the report; a failure is an error (exit 1) after the report is written.
    @discardableResult
    public func selfTest() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let a = try Checkpoint(path: model)
        report.warnings += a.warnings
        let bound = try spec(for: a, warnings: &report.warnings)
        report.warnings += bound.warnings
        var plantedPerms: [String: [Int]] = [:]
        for inst in bound.instances {
            var rng = SeededRNG(seed: seed, stream: "permute-match/planted/" + inst.name)
            plantedPerms[inst.name] = rng.permutation(inst.size)
        }
        let planted = plantedPerms
        timer.lap("plan")
        let at = CheckpointTensors(a, names: bound.tensors.map(\.name))
        let matcher = WeightMatcher(spec: bound, a: at, b: PermutedTensors(base: at, spec: bound, perms: planted),
                                    seed: seed, maxSweeps: maxSweeps, threads: settings.threads)
        let outcome = try matcher.run()
        timer.lap("match")
        // out = planted(A) re-indexed by the answer; it must be A, byte for byte.
        let same = try Engine.map(count: bound.tensors.count, threads: settings.threads) { t -> Bool in
            let e = a.entry(bound.tensors[t].name)!
            let vp = bound.indexVectors(tensor: t, planted), vf = bound.indexVectors(tensor: t, outcome.perms)
            let composed: [[Int]?] = zip(vp, vf).map { p, f in
                switch (p, f) {
                case (nil, nil): return nil
                case let (p?, nil): return p
                case let (nil, f?): return f
                case let (p?, f?): return f.map { p[$0] }
                }
            }
            let src = a.bytes(e)
            guard !src.isEmpty, composed.contains(where: { $0 != nil }) else { return true }
            let dst = UnsafeMutableRawPointer.allocate(byteCount: src.count, alignment: 64)
            defer { dst.deallocate() }
            Gather.gather(src.baseAddress!, into: dst, shape: bound.tensors[t].shape, elementSize: e.info.dtype.size!, composed)
            return memcmp(dst, src.baseAddress!, src.count) == 0
        }
        timer.lap("check")
        let recovered = same.allSatisfy { $0 }
        report.inputs = [RunReport.describe(a)]
        report.parameters = [("mode", .string("self-test")), ("spec", .string(specPath ?? "auto")), ("seed", .uint(seed)), ("max_sweeps", .int(maxSweeps))]
        report.summary = [("architecture", .string(bound.spec.architecture)), ("spaces", .int(bound.instances.count)),
                          ("recovered", .bool(recovered)), ("tensors_equal", .int(same.filter { $0 }.count)),
                          ("tensors", .int(same.count)),
                          ("sweeps", .int(outcome.sweeps)), ("converged", .bool(outcome.converged)),
                          ("space_details", .array(PermuteMatchJob.spaceRows(bound, outcome)))]
        report.timing = timer.phases + [("cost_s", .double(outcome.costSeconds)), ("lap_s", .double(outcome.lapSeconds))]
        if let path = settings.reportPath { try report.write(to: path) }
        if !recovered {
            let bad = zip(bound.tensors, same).first { !$0.1 }!.0.name
            throw FormatError(file: model, tensor: bad, "self-test failed: matching did not undo the planted permutation (\(same.filter { !$0 }.count) of \(same.count) tensors differ; coordinate descent stopped in a local optimum)")
        }
        return report
    }
}

