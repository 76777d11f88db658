import Linalg
import SafeTensors

/// One coordinate-descent step: a space's linear assignment problem.
public struct MatchStep: Sendable {
    public let sweep: Int
    public let space: String
    /// Objective gain of the step (0 when the current permutation was kept).
    public let gain: Double
    /// Units whose position changed in this step.
    public let moved: Int
    /// True when no space sharing a tensor with this one changed since its last step: the cost
    /// matrix is the same, so the answer is too, and it was not rebuilt.
    public let skipped: Bool
}

public struct MatchOutcome: Sendable {
    public var perms: [String: [Int]]
    public var steps: [MatchStep] = []
    public var sweeps = 0
    public var converged = false
    public var costSeconds = 0.0
    public var lapSeconds = 0.0
    /// Cost terms taken from the cache of terms that read no other permutation.
    public var cachedTerms = 0
    /// Floating-point operations of the cost GEMMs run (2 n^2 m for each term computed).
    public var costFlops = 0.0
}

/// The n x n partials of the cost terms that read no permutation but their own space's (the
/// input and output layers of an MLP, a model's embeddings and head for its residual space):
/// they are the same at every visit, so each is computed once. Bounded by `budget` bytes; terms
/// past it are recomputed as before. Added in the same order as a fresh computation, so the cost
/// matrix keeps its bits.
struct StaticTermCache {
    struct Key: Hashable { let instance: String; let occurrence: BoundSpec.Occurrence }
    var partials: [Key: [Float]] = [:]
    var bytes = 0
    /// 1 GiB, 16 cost matrices of 4096 x 4096.
    var budget = 1 << 30
    /// Terms with fewer summed entries per unit than this (biases, norms) cost less to recompute
    /// (2m flops an entry) than to keep and read back.
    static let minimumInner = 16

    mutating func store(_ key: Key, _ partial: [Float]) {
        let size = partial.count * MemoryLayout<Float>.size
        guard bytes + size <= budget else { return }
        partials[key] = partial
        bytes += size
    }
}

/// Git Re-Basin's weight matching: maximise sum_t <A_t, pi(B_t)> over the spec's permutations by
/// coordinate descent, one exact LAP per space, in a seeded random order per sweep, until a sweep
/// changes nothing. Each cost matrix is accumulated tensor by tensor (sgemm in f32, sum in f64),
/// so memory holds the tensors of one step plus one n x n cost.
struct WeightMatcher {
    let spec: BoundSpec
    let a: FloatTensors
    let b: FloatTensors
    var seed: UInt64 = 0
    var maxSweeps = 100
    /// Workers for the cost GEMMs (fixed blocks of rows, each one single-threaded BLAS call, so
    /// the sums, and hence the result, do not depend on it), and the assignment solver's (same
    /// answer for any).
    var threads = 1

    func run() throws -> MatchOutcome {
        var out = MatchOutcome(perms: spec.identity)
        let names = spec.instances.map(\.name)
        let template = Dictionary(uniqueKeysWithValues: spec.instances.map { ($0.name, $0.template) })
        let neighbours = neighbourTemplates()
        let selfCoupled = selfCoupledTemplates()
        var changedAt: [String: Int] = [:]
        var computedAt: [String: Int] = [:]
        var clock = 0
        var cache = StaticTermCache()
        // The cost and partial buffers of the largest space so far, reused by every step (fresh
        // n x n buffers each step cost as many page faults as the additions into them).
        let buffers = CostBuffers()
        for sweep in 0..<maxSweeps {
            var rng = SeededRNG(seed: seed, stream: "permute-match/order", block: UInt64(sweep))
            let order = rng.permutation(names.count).map { names[$0] }
            var progress = false
            for x in order {
                clock += 1
                let t = template[x]!
                if let at = computedAt[x], !selfCoupled.contains(t), neighbours[t]!.allSatisfy({ (changedAt[$0] ?? 0) <= at }) {
                    out.steps.append(MatchStep(sweep: sweep + 1, space: x, gain: 0, moved: 0, skipped: true))
                    continue
                }
                var t0 = monotonicSeconds()
                let n = spec.instanceSize(x)!
                try costMatrix(x, n: n, out.perms, cache: &cache, hits: &out.cachedTerms, flops: &out.costFlops, into: buffers)
                computedAt[x] = clock
                out.costSeconds += monotonicSeconds() - t0
                t0 = monotonicSeconds()
                let cost = UnsafeBufferPointer(start: buffers.cost, count: n * n)
                let ci = try LinearAssignment.solve(cost, n: n, maximize: true, threads: threads)
                out.lapSeconds += monotonicSeconds() - t0
                let current = out.perms[x]!
                var oldL = 0.0, newL = 0.0, scale = 0.0
                for i in 0..<n {
                    oldL += cost[i * n + current[i]]
                    newL += cost[i * n + ci[i]]
                    var m = 0.0
                    for j in 0..<n { m = max(m, abs(cost[i * n + j])) }
                    scale += m
                }
                // Keep the current permutation unless the LAP strictly improves on it: ties never
                // move units, so the descent cannot cycle between equal answers.
                if newL - oldL > 1e-10 * scale {
                    let moved = zip(current, ci).filter { $0 != $1 }.count
                    out.perms[x] = ci
                    changedAt[t] = clock
                    progress = true
                    out.steps.append(MatchStep(sweep: sweep + 1, space: x, gain: newL - oldL, moved: moved, skipped: false))
                } else {
                    out.steps.append(MatchStep(sweep: sweep + 1, space: x, gain: 0, moved: 0, skipped: false))
                }
            }
            out.sweeps = sweep + 1
            if !progress { out.converged = true; break }
        }
        return out
    }

    /// For each template, the templates acting on any tensor it touches (its cost depends on them).
    private func neighbourTemplates() -> [String: Set<String>] {
        var r: [String: Set<String>] = [:]
        for (t, occ) in spec.occurrences {
            var s = Set<String>()
            for o in occ { s.formUnion(spec.templatesOfTensor[o.tensor]) }
            r[t] = s
        }
        return r
    }

    /// Templates acting on two axes of one tensor: their cost depends on their own value.
    private func selfCoupledTemplates() -> Set<String> {
        var r = Set<String>()
        for (t, occ) in spec.occurrences {
            var axes: [Int: Set<Int>] = [:]
            for o in occ { axes[o.tensor, default: []].insert(o.axis) }
            if axes.values.contains(where: { $0.count > 1 }) { r.insert(t) }
        }
        return r
    }

    /// C[i, j] = similarity of A's unit i and B's unit j of space `x`, every other permutation
    /// applied to B: the sum over the tensors it touches of Xa Xb^T (unit axis moved to the front).
    /// Written into buffers.cost[0 ..< n * n].
    func costMatrix(_ x: String, n: Int, _ perms: [String: [Int]], cache: inout StaticTermCache, hits: inout Int,
                    flops: inout Double, into buffers: CostBuffers) throws {
        let tpl = spec.instances.first { $0.name == x }!.template
        var byTensor: [Int: [BoundSpec.Occurrence]] = [:]
        for o in spec.occurrences[tpl]! { byTensor[o.tensor, default: []].append(o) }
        buffers.reserve(n * n)
        let cost = buffers.cost, partial = buffers.partial
        cost.update(repeating: 0, count: n * n)
        func add(_ p: UnsafePointer<Float>) { for k in 0..<(n * n) { cost[k] += Double(p[k]) } }
        for t in byTensor.keys.sorted() where spec.tensors[t].dtype.isFloatingPoint {
            let occ = byTensor[t]!
            let shape = spec.tensors[t].shape
            let axes = Set(occ.map(\.axis)).sorted()
            // Only this (plain) space acts on the tensor, on one axis: no other permutation enters.
            let isStatic = spec.templatesOfTensor[t] == [tpl] && !spec.templates[tpl]!.isFamily && axes.count == 1
            let av = a.floats(t)
            for axis in axes {
                var bp: [Float]? = nil
                for o in occ where o.axis == axis {
                    guard let units = UnitView(spec, o, instance: x, perms: perms, shape: shape) else { continue }
                    let key = StaticTermCache.Key(instance: x, occurrence: o)
                    if isStatic, let kept = cache.partials[key] { kept.withUnsafeBufferPointer { add($0.baseAddress!) }; hits += 1; continue }
                    if bp == nil {
                        let index: [[Int]?] = spec.tensors[t].axes.enumerated().map { k, ax in
                            guard let ax, !ax.isFixed else { return nil }
                            return spec.indexVector(ax, perms, except: k == axis ? x : nil)
                        }
                        bp = Gather.floats(b.floats(t), shape: shape, index)
                    }
                    units.similarity(av, bp!, into: partial, threads: threads)
                    add(partial)
                    let inner = units.inner * units.lo * units.outer * units.prefixes.count
                    flops += 2 * Double(n) * Double(n) * Double(inner)
                    if isStatic && inner >= StaticTermCache.minimumInner {
                        cache.store(key, Array(UnsafeBufferPointer(start: partial, count: n * n)))
                    }
                }
            }
        }
    }
}

/// A step's n x n cost (f64) and one term's partial (f32), kept at the largest size asked for.
final class CostBuffers {
    private(set) var cost = UnsafeMutablePointer<Double>.allocate(capacity: 1)
    private(set) var partial = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    private var capacity = 1

    func reserve(_ count: Int) {
        guard count > capacity else { return }
        cost.deallocate(); partial.deallocate()
        cost = .allocate(capacity: count)
        partial = .allocate(capacity: count)
        capacity = count
    }

    deinit { cost.deallocate(); partial.deallocate() }
}

/// How one occurrence of a space sits in a tensor: the tensor seen as (outer, L, inner) along
/// the axis, the axis position of unit i in prefix h and sub-position l being
/// offset + (h * n + i) * lo + l. Only prefixes whose source indices name this instance count.
struct UnitView {
    let n: Int, outer: Int, inner: Int, length: Int, lo: Int, offset: Int
    let prefixes: [Int]
    let hiCount: Int

    init?(_ spec: BoundSpec, _ o: BoundSpec.Occurrence, instance x: String, perms: [String: [Int]], shape: [Int]) {
        let axis = spec.tensors[o.tensor].axes[o.axis]!
        let seg = axis.segments[o.segment]
        offset = axis.segments[..<o.segment].reduce(0) { $0 + $1.reduce(1) { $0 * $1.size } }
        n = seg[o.level].size
        lo = seg[(o.level + 1)...].reduce(1) { $0 * $1.size }
        outer = shape[..<o.axis].reduce(1, *)
        inner = shape[(o.axis + 1)...].reduce(1, *)
        length = shape[o.axis]
        hiCount = seg[..<o.level].reduce(1) { $0 * $1.size }
        let tpl = spec.templates[seg[o.level].space!]!
        if !tpl.isFamily {
            prefixes = Array(0..<hiCount)
        } else {
            // Walk the output prefixes, tracking the source index each outer level reads.
            var found: [Int] = []
            var source = [Int](repeating: 0, count: o.level)
            var outIdx = [Int](repeating: 0, count: o.level)
            let sizes = seg[..<o.level].map(\.size)
            for h in 0..<hiCount {
                var rest = h
                for k in stride(from: o.level - 1, through: 0, by: -1) { outIdx[k] = rest % sizes[k]; rest /= sizes[k] }
                for k in 0..<o.level {
                    if let sp = seg[k].space, let p = perms[spec.templates[sp]!.instance(source)] {
                        source[k] = p[outIdx[k]]
                    } else {
                        source[k] = outIdx[k]
                    }
                }
                if tpl.instance(source) == x { found.append(h) }
            }
            prefixes = found
        }
        if prefixes.isEmpty { return nil }
    }

    /// into (n x n, f32) = Xa Xb^T for this occurrence.
    func similarity(_ a: [Float], _ b: [Float], into c: UnsafeMutablePointer<Float>, threads: Int) {
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                let A = pa.baseAddress!, B = pb.baseAddress!
                if outer == 1 && hiCount == 1 {
                    // Units are rows: n rows of lo*inner values, contiguous.
                    let m = lo * inner
                    BlockedProducts.gemmRowBlocks(transA: false, transB: true, m: n, n: n, k: m, A + offset * inner, lda: m, B + offset * inner, ldb: m,
                                                  into: c, threads: threads)
                } else if inner == 1 && lo == 1 && hiCount == 1 {
                    // Units are columns of an (outer x length) matrix.
                    BlockedProducts.gemmRowBlocks(transA: true, transB: false, m: n, n: n, k: outer, A + offset, lda: length, B + offset, ldb: length,
                                                  into: c, threads: threads)
                } else {
                    let m = outer * prefixes.count * lo * inner
                    let xa = gatherUnits(A, m), xb = gatherUnits(B, m)
                    BlockedProducts.gemmRowBlocks(transA: false, transB: true, m: n, n: n, k: m, xa, lda: m, xb, ldb: m, into: c, threads: threads)
                    xa.deallocate(); xb.deallocate()
                }
            }
        }
    }

    /// The units as an n x m row-major matrix.
    private func gatherUnits(_ src: UnsafePointer<Float>, _ m: Int) -> UnsafeMutablePointer<Float> {
        let x = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n * m))
        for i in 0..<n {
            var col = 0
            let row = x + i * m
            for o in 0..<outer {
                for h in prefixes {
                    for l in 0..<lo {
                        let pos = offset + (h * n + i) * lo + l
                        (row + col).update(from: src + (o * length + pos) * inner, count: inner)
                        col += inner
                    }
                }
            }
        }
        return x
    }
}
