/// A parameter value once resolved for one tensor.
public enum ParamValue: Sendable, Equatable, CustomStringConvertible {
    case number(Double)
    case bool(Bool)
    case string(String)

    public var double: Double? {
        switch self {
        case let .number(v): return v
        case let .bool(b): return b ? 1 : 0
        case .string: return nil
        }
    }
    public var description: String {
        switch self {
        case let .number(v): return formatNumber(v)
        case let .bool(b): return b ? "true" : "false"
        case let .string(s): return s
        }
    }
}

func formatNumber(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : "\(v)"
}

/// mergekit's parameter grammar:
/// `scalar | [number, ...] (gradient over layers) | {filter?, value} | [{filter?, value}, ...]`.
public indirect enum ParameterSetting: Sendable, Equatable {
    case scalar(ParamValue)
    /// Piecewise-linear over the layer position t in [0, 1].
    case gradient([Double])
    /// Non-numeric lists step: `L[int(t * (count - 1))]`.
    case steps([ParamValue])
    /// The first entry whose filter is absent, "*", or a substring of the tensor name wins.
    case conditional([(filter: String?, value: ParameterSetting)])

    public static func == (a: ParameterSetting, b: ParameterSetting) -> Bool {
        switch (a, b) {
        case let (.scalar(x), .scalar(y)): return x == y
        case let (.gradient(x), .gradient(y)): return x == y
        case let (.steps(x), .steps(y)): return x == y
        case let (.conditional(x), .conditional(y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.filter == $1.filter && $0.value == $1.value }
        default: return false
        }
    }

    /// The value for a tensor at layer position t, or nil when no conditional entry matches (the
    /// lookup then falls through to the next level).
    public func evaluate(tensor: String, t: Double) -> ParamValue? {
        switch self {
        case let .scalar(v): return v
        case let .gradient(list):
            guard list.count > 1 else { return list.first.map { .number($0) } }
            let s = t * Double(list.count - 1)
            let i0 = min(list.count - 1, max(0, Int(s.rounded(.down))))
            let i1 = min(list.count - 1, i0 + 1)
            let f = s - Double(i0)
            return .number((1 - f) * list[i0] + f * list[i1])
        case let .steps(list):
            guard !list.isEmpty else { return nil }
            return list[min(list.count - 1, max(0, Int(t * Double(list.count - 1))))]
        case let .conditional(entries):
            for (filter, value) in entries where filter == nil || filter == "*" || tensor.contains(filter!) {
                return value.evaluate(tensor: tensor, t: t)
            }
            return nil
        }
    }

    /// Parses a YAML value (as Yams loads it). Throws a message describing the bad shape.
    public static func parse(_ any: Any, path: String) throws -> ParameterSetting {
        if let v = scalar(any) { return .scalar(v) }
        if let dict = any as? [String: Any] {
            return .conditional([try conditionalEntry(dict, path: path)])
        }
        if let list = any as? [Any] {
            if list.isEmpty { throw UsageError("\(path): an empty list is not a parameter value") }
            if list.allSatisfy({ $0 is [String: Any] }) {
                return .conditional(try list.enumerated().map { try conditionalEntry($1 as! [String: Any], path: "\(path)[\($0)]") })
            }
            let scalars = list.compactMap(scalar)
            guard scalars.count == list.count else {
                throw UsageError("\(path): a list must hold only numbers (a gradient), only scalars, or only {filter, value} entries")
            }
            if scalars.allSatisfy({ if case .number = $0 { return true } else { return false } }) {
                return .gradient(scalars.map { $0.double! })
            }
            return .steps(scalars)
        }
        throw UsageError("\(path): unsupported value \(any)")
    }

    private static func conditionalEntry(_ d: [String: Any], path: String) throws -> (filter: String?, value: ParameterSetting) {
        let unknown = d.keys.filter { $0 != "filter" && $0 != "value" }
        guard unknown.isEmpty else { throw UsageError("\(path): unknown key(s) \(unknown.sorted().joined(separator: ", ")) (expected filter and value)") }
        guard let v = d["value"] else { throw UsageError("\(path): a conditional entry needs a value") }
        var filter: String? = nil
        if let f = d["filter"] {
            guard let s = f as? String else { throw UsageError("\(path): filter must be a string") }
            filter = s
        }
        return (filter, try parse(v, path: path + ".value"))
    }

    static func scalar(_ any: Any) -> ParamValue? {
        switch any {
        case let b as Bool: return .bool(b)
        case let i as Int: return .number(Double(i))
        case let d as Double: return .number(d)
        case let s as String:
            if let d = Double(s) { return .number(d) }
            return .string(s)
        default: return nil
        }
    }
}
