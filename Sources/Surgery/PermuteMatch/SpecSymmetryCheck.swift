import Linalg
import SafeTensors

/// Refuses a spec file whose permutations are not symmetries of the model: for a model wtool
/// knows (MLP chains, the LLaMA family, GPT-2, BERT), the built-in spec lists every permutation
/// that leaves the function unchanged. Random draws of the file's spaces must then be expressible
/// in the built-in spec: each built-in space gets one value, read off every tensor axis it acts
/// on, and fixed levels stay put. A file that moves Q/K dims inside a head under RoPE, or the
/// residual without its norms, fails here with the tensors named.
enum SpecSymmetryCheck {
    static func check(_ user: BoundSpec, against reference: BoundSpec, source: String, seed: UInt64) throws {
        for draw in 0..<2 {
            var perms: [String: [Int]] = [:]
            for inst in user.instances {
                var rng = SeededRNG(seed: seed, stream: "permute-match/spec-check/" + inst.name, block: UInt64(draw))
                perms[inst.name] = rng.permutation(inst.size)
            }
            // value[instance][slot] of the built-in spec, and where it was first read.
            var values: [String: [Int?]] = [:]
            var firstSeen: [String: String] = [:]
            for (t, tensor) in user.tensors.enumerated() {
                let refAxes = reference.tensors[t].axes
                for (a, axis) in tensor.axes.enumerated() {
                    let length = tensor.shape[a]
                    let index = axis.map { $0.isFixed ? Array(0..<length) : user.indexVector($0, perms) } ?? Array(0..<length)
                    let where_ = "'\(tensor.name)' axis \(a)"
                    let ref = refAxes[a] ?? PermutationSpec.Axis([.fixed(length)])
                    try read(index, ref, reference, into: &values, firstSeen: &firstSeen, at: where_, source: source, tensor: tensor.name, arch: reference.spec.architecture)
                }
            }
        }
    }

    /// Reads the built-in spaces' values off one axis's index vector.
    private static func read(_ index: [Int], _ axis: PermutationSpec.Axis, _ spec: BoundSpec,
                             into values: inout [String: [Int?]], firstSeen: inout [String: String],
                             at place: String, source: String, tensor: String, arch: String) throws {
        func bad(_ m: String) -> FormatError { FormatError(file: source, tensor: tensor, m) }
        var segStart = 0
        var segOf: [(start: Int, levels: [PermutationSpec.Level])] = []
        for seg in axis.segments { segOf.append((segStart, seg)); segStart += seg.reduce(1) { $0 * $1.size } }
        for (segIndex, seg) in segOf.enumerated() {
            let len = seg.levels.reduce(1) { $0 * $1.size }
            let strides = BoundSpec.strides(seg.levels)
            for j in 0..<len {
                let src = index[seg.start + j]
                guard src >= seg.start && src < seg.start + len else {
                    throw bad("\(place) moves entries out of part \(segIndex) of a fused axis, which the \(arch) model does not allow")
                }
                var sourceIdx: [Int] = [], outIdx: [Int] = []
                var rs = src - seg.start, ro = j
                for s in strides { sourceIdx.append(rs / s); rs %= s; outIdx.append(ro / s); ro %= s }
                for (k, level) in seg.levels.enumerated() {
                    guard let sp = level.space else {
                        if sourceIdx[k] != outIdx[k] {
                            let why = level.why.map { ": \($0)" } ?? ""
                            throw bad("\(place) moves positions inside a block of \(level.size), which must stay in place in a \(arch) model\(why)")
                        }
                        continue
                    }
                    let inst = spec.templates[sp]!.instance(sourceIdx)
                    var v = values[inst] ?? Array(repeating: nil, count: level.size)
                    if let old = v[outIdx[k]], old != sourceIdx[k] {
                        throw bad("\(place) must move with \(firstSeen[inst]!) (both carry the \(arch) spec's space '\(inst)'), but the spec permutes them differently")
                    }
                    if v[outIdx[k]] == nil {
                        v[outIdx[k]] = sourceIdx[k]
                        values[inst] = v
                        if firstSeen[inst] == nil { firstSeen[inst] = place }
                    }
                }
            }
        }
    }
}
