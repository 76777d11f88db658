import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

/// A spec checked against a checkpoint's tensors: every tensor covered, every axis the right
/// length, every space one size. It knows the concrete space instances and turns a set of
/// permutations into per-axis index vectors (out[j] = B[index[j]]).
public struct BoundSpec: Sendable {
    public struct Instance: Sendable {
        public let name: String
        public let size: Int
        /// The space template it is an instance of.
        public let template: String
    }
    /// Where a space template acts: tensor `tensor` (index into `tensors`), axis, segment, level.
    struct Occurrence: Sendable, Hashable {
        let tensor: Int, axis: Int, segment: Int, level: Int
    }

    public let spec: PermutationSpec
    /// The checkpoint's tensors in order, with their axes (nil: stays).
    public let tensors: [(name: String, shape: [Int], dtype: DType, axes: [PermutationSpec.Axis?])]
    /// Concrete spaces (families expanded), sorted by name.
    public let instances: [Instance]
    /// Occurrences of each template.
    let occurrences: [String: [Occurrence]]
    let templates: [String: SpaceTemplate]
    /// The space templates acting on each tensor.
    let templatesOfTensor: [[String]]
    public let warnings: [String]

    /// Checks `spec` against `entries` (names, shapes, dtypes) of the checkpoint at `path`.
    public init(_ spec: PermutationSpec, entries: [Checkpoint.Entry], path: String, specSource: String) throws {
        func bad(_ tensor: String?, _ m: String) -> FormatError { FormatError(file: specSource, tensor: tensor, m) }
        self.spec = spec
        var byName: [String: PermutationSpec.TensorAxes] = [:]
        for t in spec.tensors { byName[t.name] = t }
        let names = Set(entries.map(\.name))
        for t in spec.tensors where !names.contains(t.name) {
            throw bad(t.name, "the spec lists this tensor but \(path) does not hold it")
        }
        let sizes = Dictionary(spec.spaces.map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        var templates: [String: SpaceTemplate] = [:]
        for s in spec.spaces { templates[s.name] = SpaceTemplate(s.name) }
        var tensors: [(name: String, shape: [Int], dtype: DType, axes: [PermutationSpec.Axis?])] = []
        var occurrences: [String: [Occurrence]] = [:]
        var templatesOfTensor: [[String]] = []
        var instanceNames: [String: (Int, String)] = [:]
        for (ti, e) in entries.enumerated() {
            let shape = e.info.shapeInts
            guard let t = byName[e.name] else {
                guard spec.fixed.contains(where: { fnmatch($0, e.name, 0) == 0 }) else {
                    throw bad(e.name, "is not covered by the spec: list it (null axes keep it in place) or add it to \"fixed\"")
                }
                tensors.append((e.name, shape, e.info.dtype, Array(repeating: nil, count: shape.count)))
                templatesOfTensor.append([])
                continue
            }
            guard t.axes.count == shape.count else {
                throw bad(e.name, "the spec gives \(t.axes.count) axes, the tensor has shape \(shape) (\(shape.count) axes)")
            }
            var acting: [String] = []
            for (a, axis) in t.axes.enumerated() {
                guard let axis, !axis.isFixed else { continue }
                guard axis.length == shape[a] else {
                    throw bad(e.name, "axis \(a) has length \(shape[a]) but the spec's levels make \(axis.length)")
                }
                guard e.info.dtype.size != nil else {
                    throw bad(e.name, "\(e.info.dtype.rawValue) values cannot be re-indexed (not whole bytes)")
                }
                for (si, seg) in axis.segments.enumerated() {
                    var seen = Set<String>()
                    for (li, level) in seg.enumerated() {
                        guard let sp = level.space else { continue }
                        guard let size = sizes[sp] else { throw bad(e.name, "axis \(a) uses space '\(sp)', which the spec does not declare") }
                        guard size == level.size else { throw bad(e.name, "axis \(a): space '\(sp)' has size \(size), the level \(level.size)") }
                        guard seen.insert(sp).inserted else { throw bad(e.name, "axis \(a): space '\(sp)' moves two levels of one segment") }
                        let tpl = templates[sp]!
                        for k in tpl.levels where k >= li {
                            throw bad(e.name, "axis \(a): space '\(sp)' refers to level \(k), which is not outside it (level \(li))")
                        }
                        occurrences[sp, default: []].append(Occurrence(tensor: ti, axis: a, segment: si, level: li))
                        if !acting.contains(sp) { acting.append(sp) }
                        // Every instance this template takes here.
                        var idx = [Int](repeating: 0, count: li)
                        let refSizes = tpl.levels.map { seg[$0].size }
                        var combo = [Int](repeating: 0, count: refSizes.count)
                        repeat {
                            for (c, k) in tpl.levels.enumerated() { idx[k] = combo[c] }
                            instanceNames[tpl.instance(idx)] = (size, sp)
                        } while BoundSpec.advance(&combo, refSizes)
                    }
                }
            }
            tensors.append((e.name, shape, e.info.dtype, t.axes))
            templatesOfTensor.append(acting)
        }
        var warnings: [String] = []
        for s in spec.spaces where occurrences[s.name] == nil {
            warnings.append("spec: space '\(s.name)' is declared but no tensor uses it")
        }
        self.tensors = tensors
        self.occurrences = occurrences
        self.templates = templates
        self.templatesOfTensor = templatesOfTensor
        self.instances = instanceNames.map { Instance(name: $0.key, size: $0.value.0, template: $0.value.1) }.sorted { $0.name < $1.name }
        self.warnings = warnings
    }

    /// Odometer step over mixed radices; false once it wraps.
    static func advance(_ c: inout [Int], _ radix: [Int]) -> Bool {
        var k = c.count - 1
        while k >= 0 {
            c[k] += 1
            if c[k] < radix[k] { return true }
            c[k] = 0
            k -= 1
        }
        return false
    }

    public func instanceSize(_ name: String) -> Int? { instances.first { $0.name == name }?.size }

    /// The gather index of one axis: out[j] = B[index[j]]. Instances missing from `perms`, and
    /// `except`, act as the identity.
    func indexVector(_ axis: PermutationSpec.Axis, _ perms: [String: [Int]], except: String? = nil) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(axis.length)
        var offset = 0
        for seg in axis.segments {
            var source = [Int](repeating: 0, count: seg.count)
            let strides = BoundSpec.strides(seg)
            func walk(_ k: Int, _ base: Int) {
                let level = seg[k]
                var p: [Int]? = nil
                if let sp = level.space {
                    let name = templates[sp]!.instance(source)
                    if name != except { p = perms[name] }
                }
                for j in 0..<level.size {
                    let s = p?[j] ?? j
                    source[k] = s
                    if k == seg.count - 1 { out.append(offset + base + s) } else { walk(k + 1, base + s * strides[k]) }
                }
            }
            walk(0, 0)
            offset += seg.reduce(1) { $0 * $1.size }
        }
        return out
    }

    static func strides(_ seg: [PermutationSpec.Level]) -> [Int] {
        var s = [Int](repeating: 1, count: seg.count)
        var k = seg.count - 2
        while k >= 0 { s[k] = s[k + 1] * seg[k + 1].size; k -= 1 }
        return s
    }

    /// Index vectors for every axis of tensor `t` (nil: identity).
    func indexVectors(tensor t: Int, _ perms: [String: [Int]], except: String? = nil) -> [[Int]?] {
        tensors[t].axes.map { axis in
            guard let axis, !axis.isFixed else { return nil }
            let v = indexVector(axis, perms, except: except)
            return v.enumerated().allSatisfy { $0.offset == $0.element } ? nil : v
        }
    }

    /// Identity permutations for every instance.
    public var identity: [String: [Int]] {
        Dictionary(uniqueKeysWithValues: instances.map { ($0.name, Array(0..<$0.size)) })
    }
}
