import SafeTensors

/// A parameter a method accepts: global (one value per tensor) or per model.
public struct ParameterSpec: Sendable {
    public let name: String
    public let defaultValue: ParamValue?   // nil: required
    public let help: String
    /// Allowed values for numbers (nil: any finite number).
    public let range: ClosedRange<Double>?
    /// Whether a string is a valid value (else numbers and booleans only).
    public let allowsStrings: Bool
    public init(_ name: String, _ defaultValue: ParamValue?, _ help: String, range: ClosedRange<Double>? = nil, allowsStrings: Bool = false) {
        self.name = name; self.defaultValue = defaultValue; self.help = help; self.range = range; self.allowsStrings = allowsStrings
    }

    /// Refuses values a method cannot use, naming the parameter and the tensor.
    func check(_ v: ParamValue, tensor: String) throws {
        switch v {
        case let .string(s) where !allowsStrings:
            throw UsageError("parameter '\(name)' must be a number, not '\(s)' (tensor '\(tensor)')")
        case let .number(x):
            guard x.isFinite else { throw UsageError("parameter '\(name)' must be finite (tensor '\(tensor)')") }
            if let range, !range.contains(x) {
                throw UsageError("parameter '\(name)' is \(formatNumber(x)), outside \(formatNumber(range.lowerBound))...\(formatNumber(range.upperBound)) (tensor '\(tensor)')")
            }
        default: break
        }
    }
}

/// How a method treats `base_model`.
public enum BaseRole: Sendable {
    /// The base is required and is not one of the merged models (task-vector methods, slerp...).
    case required
    /// Used when given (deltas are taken from it), else the models are merged directly.
    case optional
    /// The base is only an input like the others (linear, karcher): counted among the models.
    case asInput
    /// Not used.
    case none
}

/// Everything one method call sees: one output tensor's inputs, decoded to f32, and its
/// parameters resolved for this tensor.
public struct MergeContext: Sendable {
    public let tensor: String
    public let shape: [Int]
    public let base: [Float]?
    /// Owned by the method (the context is consumed): methods may take the arrays over.
    public var models: [[Float]]
    public let global: [String: ParamValue]
    public let perModel: [[String: ParamValue]]
    public let seed: UInt64

    public var count: Int { shape.reduce(1, *) }

    public func number(_ name: String) -> Double { global[name]?.double ?? .nan }
    public func flag(_ name: String) -> Bool { (global[name]?.double ?? 0) != 0 }
    public func modelNumber(_ i: Int, _ name: String) -> Double { perModel[i][name]?.double ?? .nan }
}

/// A method's result: the merged values and what it measured.
public struct MergeOutput: Sendable {
    public var values: [Float]
    public var metrics: [(String, JSONValue)]
    public init(values: [Float], metrics: [(String, JSONValue)] = []) { self.values = values; self.metrics = metrics }
}

/// A merge method (one file each under Methods/).
public protocol MergeMethod: Sendable {
    var name: String { get }
    var base: BaseRole { get }
    /// Allowed number of merged models (not counting a `.required`/`.optional` base).
    var modelCount: ClosedRange<Int> { get }
    var globalParameters: [ParameterSpec] { get }
    var modelParameters: [ParameterSpec] { get }
    func merge(_ c: consuming MergeContext) throws -> MergeOutput
    /// Checks one tensor's resolved parameters at planning time (before any tensor is merged).
    func check(global: [String: ParamValue], perModel: [[String: ParamValue]]) throws
    /// For methods whose output is a fixed linear combination of the inputs, the coefficients
    /// (the base's first when the method uses one): the engine then streams the tensor in small
    /// blocks instead of decoding whole tensors. nil otherwise.
    func linearCoefficients(global: [String: ParamValue], perModel: [[String: ParamValue]]) -> [Double]?
}

extension MergeMethod {
    public func check(global: [String: ParamValue], perModel: [[String: ParamValue]]) throws {}
    public func linearCoefficients(global: [String: ParamValue], perModel: [[String: ParamValue]]) -> [Double]? { nil }
}

/// Normalising by a sum of weights that is zero is a user error (mergekit writes Inf/NaN or
/// silently divides by 1).
func checkWeightSum(_ global: [String: ParamValue], _ perModel: [[String: ParamValue]], normalizeKey: String) throws {
    guard (global[normalizeKey]?.double ?? 0) != 0 else { return }
    let sum = perModel.reduce(0.0) { $0 + ($1["weight"]?.double ?? 0) }
    if sum == 0 { throw UsageError("the weights sum to 0 and \(normalizeKey) is on: set \(normalizeKey): false or change the weights") }
}

/// A numeric problem in one tensor's merge (for example weights summing to zero with normalize).
public struct MergeError: Error, CustomStringConvertible {
    public let description: String
    public init(_ m: String) { description = m }
}

public enum MergeMethods {
    /// Every method, by mergekit's name.
    public static let all: [any MergeMethod] = [
        LinearMerge(), SlerpMerge(), NuSlerpMerge(), MultiSlerpMerge(), KarcherMerge(),
        TaskArithmeticMerge(.taskArithmetic), TaskArithmeticMerge(.ties), TaskArithmeticMerge(.dareTies),
        TaskArithmeticMerge(.dareLinear), TaskArithmeticMerge(.breadcrumbs), TaskArithmeticMerge(.breadcrumbsTies),
        TaskArithmeticMerge(.della), TaskArithmeticMerge(.dellaLinear), SCEMerge(), ModelStockMerge(),
        NearSwapMerge(), PassthroughMerge(),
    ]

    public static func named(_ name: String) throws -> any MergeMethod {
        if let m = all.first(where: { $0.name == name }) { return m }
        let hint = nearest(name, in: all.map(\.name)).map { " (did you mean '\($0)'?)" } ?? ""
        throw UsageError("unknown merge method '\(name)'\(hint); known: \(all.map(\.name).joined(separator: ", "))")
    }
}

/// The closest candidate by edit distance, when it is close enough to be a plausible typo.
public func nearest(_ word: String, in candidates: [String]) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var prev = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var cur = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(1, b.count) where !b.isEmpty {
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            prev = cur
        }
        return a.isEmpty ? b.count : (b.isEmpty ? a.count : prev[b.count])
    }
    let w = Array(word.lowercased().replacingOccurrences(of: "-", with: "_"))
    guard let best = candidates.min(by: { distance(w, Array($0)) < distance(w, Array($1)) }) else { return nil }
    return distance(w, Array(best)) <= max(2, word.count / 3) ? best : nil
}

extension String {
    /// Every occurrence of `a` replaced by `b` (no Foundation in this module).
    func replacingOccurrences(of a: String, with b: String) -> String {
        guard !a.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}
