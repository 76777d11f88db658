import CMerge
import Linalg
import SafeTensors

/// The task-arithmetic family as one pipeline: sparsify each delta, weight it, elect a sign per
/// entry, sum, normalise, scale by lambda, add to the base (mergekit's
/// GeneralizedTaskArithmeticMerge). `task-vector apply` runs the same pipeline.
public struct TaskArithmeticPipeline: Sendable {
    public var sparsifier: Sparsifier?
    /// TIES sign election ("sum" consensus): keep, per entry, the deltas whose sign agrees with
    /// the sign of the weighted sum.
    public var electSign: Bool
    public var normalize: Bool
    public var lambda: Double
    public var rescale: RescaleRule?

    public struct Result {
        public var mixed: [Float]          // the combined delta (before adding to the base)
        public var kept: [Double]          // fraction of each delta kept by the sparsifier
        public var signConflicts: Double?  // fraction of entries with deltas of both signs
    }

    /// - Parameters:
    ///   - deltas: one task vector per model (same length).
    ///   - weights, densities, gammas, epsilons: per model.
    /// - Parameter deltas: sparsified in place.
    public func run(deltas ds: inout [[Float]], shape: [Int], weights: [Double], densities: [Double], gammas: [Double],
                    epsilons: [Double], seed: UInt64, tensor: String) throws -> Result {
        let n = ds.first?.count ?? 0
        var kept = [Double](repeating: 1, count: ds.count)
        if let sparsifier {
            for m in ds.indices {
                // One stream per (seed, tensor, model position): independent of threads and order.
                let rng = SeededRNG(seed: seed, stream: tensor, block: UInt64(m))
                let k = try sparsifier.apply(&ds[m], shape: shape, density: densities[m], gamma: gammas[m], epsilon: epsilons[m],
                                             rescale: rescale, rng: rng, tensor: tensor)
                kept[m] = n > 0 ? Double(k) / Double(n) : 1
            }
        }
        var mixed = [Float](repeating: 0, count: n)
        var conflicts = 0
        let w = weights
        if electSign {
            let ptrs = ds.map { $0.withUnsafeBufferPointer { $0.baseAddress! } }
            conflicts = withExtendedLifetime(ds) {
                mixed.withUnsafeMutableBufferPointer { out in
                    TaskArithmeticPipeline.electAndSum(ptrs, weights: w, into: out.baseAddress!, count: n, normalize: normalize, lambda: lambda)
                }
            }
        } else {
            let total = w.reduce(0, +)
            if normalize && abs(total) < 1e-8 {
                throw MergeError("the weights sum to \(total): normalize would divide by zero")
            }
            let scale = (normalize ? 1 / total : 1) * lambda
            mixed = VectorMath.combine(ds, w.map { $0 * scale }, count: n)
        }
        return Result(mixed: mixed, kept: kept, signConflicts: electSign && n > 0 ? Double(conflicts) / Double(n) : nil)
    }
}

extension TaskArithmeticPipeline {
    /// TIES sign election and disjoint sum (CMerge's wt_elect_sum, branch-free: the signs of real
    /// deltas are random, so a branchy loop mispredicts half the time). Per entry: the majority
    /// sign is the sign of Σ w_m δ_m (0 elects +); the deltas of that sign (zeros never agree) are
    /// summed and, with normalize, divided by the sum of their weights. Returns the number of
    /// entries where deltas of both signs met.
    static func electAndSum(_ ptrs: [UnsafePointer<Float>], weights w: [Double], into out: UnsafeMutablePointer<Float>,
                            count n: Int, normalize: Bool, lambda: Double) -> Int {
        precondition(ptrs.count == w.count)
        let xs = ptrs.map { Optional($0) }
        return Int(wt_elect_sum(xs, w, ptrs.count, out, n, normalize ? 1 : 0, lambda))
    }
}

extension TaskArithmeticPipeline {
    /// What `tiesBlock` measured in one block.
    struct BlockFigures {
        var kept: [Int]
        var conflicts: Int
        var squares: [Double], dots: [Double]
        var change: Double, baseSquares: Double
    }

    /// One block of models (not task vectors) sparsified and elected in one pass (CMerge's
    /// wt_ties_block): the same out (base + combined delta), kept counts, conflicts and report sums
    /// as the separate passes (`VectorMath.deltaSumsSubtracting`, `BlockSparsifier.apply` or
    /// `wt_mask_apply` and the L1 factor, `electAndSum`, `VectorMath.addBase`), without writing
    /// the deltas or rereading blocks. Up to 8 models, each a cut (its ties still to keep counted
    /// down in `models`) or a remembered kept set; `at` is the block's first entry in the tensor.
    static func tiesBlock(_ x: [UnsafePointer<Float>], base: UnsafePointer<Float>, count n: Int, models: inout [wt_ties_model], at: Int,
                          weights w: [Double], normalize: Bool, lambda: Double, into out: UnsafeMutablePointer<Float>) -> BlockFigures {
        let M = x.count
        precondition(M >= 1 && M <= 8 && models.count == M && w.count == M)
        let tail = VectorMath.tailDeltas(x, base: base, count: n)
        var sq = [Double](repeating: 0, count: 4 * M), dots = [Double](repeating: 0, count: 2 * M * (M - 1))
        var change = [Double](repeating: 0, count: 4), squares = change
        var kept = [Int](repeating: 0, count: M)
        let conflicts = Int(wt_ties_block(x.map { Optional($0) }, M, base, n, &models, at, w, normalize ? 1 : 0, lambda,
                                          out, &kept, &sq, &dots, &change, &squares))
        let g = VectorMath.laneTotals(sq, dots, tail: tail)
        let a = VectorMath.addBaseTotals(change: change, squares: squares, out, base, count: n)
        return BlockFigures(kept: kept, conflicts: conflicts, squares: g.squares, dots: g.dots, change: a.change, baseSquares: a.baseSquares)
    }
}

/// The eight task-arithmetic methods, which differ only in sparsifier, sign election and defaults.
public struct TaskArithmeticMerge: MergeMethod {
    public enum Variant: String, Sendable {
        case taskArithmetic = "task_arithmetic", ties, dareTies = "dare_ties", dareLinear = "dare_linear"
        case breadcrumbs, breadcrumbsTies = "breadcrumbs_ties", della, dellaLinear = "della_linear"
    }
    let variant: Variant
    public init(_ v: Variant) { variant = v }

    public var name: String { variant.rawValue }
    public var base: BaseRole { .required }
    public var modelCount: ClosedRange<Int> { 1...Int.max }

    var sparsifier: Sparsifier? {
        switch variant {
        case .taskArithmetic: return nil
        case .ties: return .magnitude
        case .dareTies, .dareLinear: return .random
        case .breadcrumbs, .breadcrumbsTies: return .magnitudeOutliers
        case .della, .dellaLinear: return .dellaMagprune
        }
    }
    var electSign: Bool { [.ties, .dareTies, .breadcrumbsTies, .della].contains(variant) }
    var defaultNormalize: Bool { variant == .ties || variant == .della }
    var defaultRescale: Bool { [.dareTies, .dareLinear, .della, .dellaLinear].contains(variant) }

    public var globalParameters: [ParameterSpec] {
        var p = [ParameterSpec("normalize", .bool(defaultNormalize), "divide by the sum of weights (of the agreeing models with sign election)"),
                 ParameterSpec("lambda", .number(1), "scale of the combined delta"),
                 ParameterSpec("int8_mask", .bool(false), "accepted for mergekit compatibility; no numeric effect")]
        if sparsifier == .random || sparsifier == .dellaMagprune {
            p.append(ParameterSpec("rescale", .bool(defaultRescale), "true or l1: keep each delta's L1 norm (mergekit); inverse_density: divide kept entries by their keep probability (the DARE paper); false: none", allowsStrings: true))
        }
        return p
    }
    public var modelParameters: [ParameterSpec] {
        var p = [ParameterSpec("weight", nil, "scale of this model's delta"),
                 ParameterSpec("density", .number(1), "fraction of the delta to keep", range: 0...1)]
        if sparsifier == .magnitudeOutliers { p.append(ParameterSpec("gamma", .number(0.01), "fraction of the largest entries to drop", range: 0...1)) }
        if sparsifier == .dellaMagprune { p.append(ParameterSpec("epsilon", .number(0.15), "spread of keep probabilities around the density", range: 0...1)) }
        return p
    }

    func rescaleRule(_ v: ParamValue?) throws -> RescaleRule? {
        switch v {
        case .bool(true)?: return .l1
        case .bool(false)?, nil: return nil
        case let .number(x)?: return x != 0 ? .l1 : nil
        case let .string(s)?:
            guard let r = RescaleRule(rawValue: s) else { throw UsageError("rescale: expected true, false, l1 or inverse_density, not '\(s)'") }
            return r
        }
    }

    public func check(global: [String: ParamValue], perModel: [[String: ParamValue]]) throws {
        if !electSign { try checkWeightSum(global, perModel, normalizeKey: "normalize") }
        _ = try rescaleRule(global["rescale"])
        if sparsifier == .dellaMagprune {
            for p in perModel {
                let d = p["density"]?.double ?? 1, e = p["epsilon"]?.double ?? 0.15
                if d > 0 && d < 1 && !(d - e > 0 && d + e < 1) {
                    throw UsageError("della needs 0 < density - epsilon and density + epsilon < 1 (density \(formatNumber(d)), epsilon \(formatNumber(e)))")
                }
            }
        }
    }

    /// Plain task arithmetic is linear: b + λ s Σ w_i (x_i - b) = (1 - λ s Σ w_i) b + Σ λ s w_i x_i.
    public func linearCoefficients(global: [String: ParamValue], perModel: [[String: ParamValue]]) -> [Double]? {
        guard variant == .taskArithmetic else { return nil }
        let w = perModel.map { $0["weight"]?.double ?? .nan }
        let total = w.reduce(0, +)
        let normalize = (global["normalize"]?.double ?? 0) != 0
        guard !normalize || total != 0 else { return nil }
        let scale = (global["lambda"]?.double ?? 1) * (normalize ? 1 / total : 1)
        return [1 - scale * total] + w.map { scale * $0 }
    }

    /// One tensor's pipeline and per-model parameters, from its resolved parameters.
    func parameters(global: [String: ParamValue], perModel: [[String: ParamValue]])
        throws -> (pipeline: TaskArithmeticPipeline, weights: [Double], densities: [Double], gammas: [Double], epsilons: [Double]) {
        let pipeline = TaskArithmeticPipeline(sparsifier: sparsifier, electSign: electSign, normalize: (global["normalize"]?.double ?? 0) != 0,
                                              lambda: global["lambda"]?.double ?? .nan, rescale: try rescaleRule(global["rescale"]))
        return (pipeline, perModel.map { $0["weight"]?.double ?? .nan }, perModel.map { $0["density"]?.double ?? .nan },
                perModel.map { $0["gamma"]?.double ?? 0.01 }, perModel.map { $0["epsilon"]?.double ?? 0.15 })
    }

    public func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        guard let base = c.base else { throw MergeError("\(name) needs a base model") }
        // Deltas in place, in the decoded arrays (the context is consumed: no copies).
        var deltas = c.models
        c.models = []
        for m in deltas.indices {
            deltas[m].withUnsafeMutableBufferPointer { d in base.withUnsafeBufferPointer { b in for i in 0..<d.count { d[i] -= b[i] } } }
        }
        let p = try parameters(global: c.global, perModel: c.perModel)
        var r = try p.pipeline.run(deltas: &deltas, shape: c.shape, weights: p.weights, densities: p.densities, gammas: p.gammas,
                                   epsilons: p.epsilons, seed: c.seed, tensor: c.tensor)
        r.mixed.withUnsafeMutableBufferPointer { m in base.withUnsafeBufferPointer { b in for i in 0..<m.count { m[i] += b[i] } } }
        let out = r.mixed
        var metrics: [(String, JSONValue)] = []
        if sparsifier != nil { metrics.append(("kept_fraction", .array(r.kept.map { .double($0) }))) }
        if let sc = r.signConflicts { metrics.append(("sign_conflict_fraction", .double(sc))) }
        return MergeOutput(values: out, metrics: metrics)
    }
}
