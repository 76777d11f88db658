import SafeTensors

/// `wtool diff --summary`: what a fine-tune touched, one line per module group. Tensors that differ
/// only by their layer index (`model.layers.{}.self_attn.q_proj.weight`) form one group; every
/// other tensor is a group of its own. Per group: the layers whose tensor changed, and the group's
/// relative change sqrt(Σ ||b - a||²) / sqrt(Σ ||a||²) over all its tensors (f64).
public struct DiffSummary: Sendable {
    public struct Group: Sendable {
        public let name: String
        public let tensors: Int
        public let changed: Int
        /// Layer indices whose tensor changed (empty for a group without layers).
        public let changedLayers: [Int]
        public let relative: Double
        public let maxAbs: Double
    }

    public let groups: [Group]

    public init(_ comparisons: [DiffJob.Comparison], atol: Double) {
        var order: [String] = []
        var members: [String: [(Int?, DiffJob.Comparison)]] = [:]
        for c in comparisons {
            let l = LayerName(c.name)
            let key = l?.template.replacingOccurrences(of: "{}", with: "*") ?? c.name
            if members[key] == nil { order.append(key) }
            members[key, default: []].append((l?.index, c))
        }
        groups = order.map { key in
            let m = members[key]!
            let changed = m.filter { !$0.1.withinTolerance(atol) }
            let na = m.reduce(0.0) { $0 + $1.1.normSqA }, nd = m.reduce(0.0) { $0 + $1.1.diffSq }
            return Group(name: key, tensors: m.count, changed: changed.count,
                         changedLayers: changed.compactMap(\.0).sorted(),
                         relative: na > 0 ? (nd / na).squareRoot() : (nd > 0 ? .infinity : 0),
                         maxAbs: m.map(\.1.maxAbs).max() ?? 0)
        }
    }

    /// Layer lists as ranges: 0-3,7,9-11.
    public static func ranges(_ xs: [Int]) -> String {
        var parts: [String] = []
        var i = 0
        while i < xs.count {
            var j = i
            while j + 1 < xs.count && xs[j + 1] == xs[j] + 1 { j += 1 }
            parts.append(i == j ? "\(xs[i])" : "\(xs[i])-\(xs[j])")
            i = j + 1
        }
        return parts.joined(separator: ",")
    }

    public var json: JSONValue {
        .array(groups.map { g in
            var o: [(String, JSONValue)] = [("group", .string(g.name)), ("tensors", .int(g.tensors)), ("changed", .int(g.changed)),
                                            ("changed_layers", .array(g.changedLayers.map { .int($0) }))]
            o += metric("relative_change", g.relative) + metric("max_abs_diff", g.maxAbs)
            return .object(o)
        })
    }
}
