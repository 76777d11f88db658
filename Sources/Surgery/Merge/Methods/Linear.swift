import SafeTensors

/// Weighted average (model soups): Σ w_i x_i, divided by Σ w_i when normalize.
struct LinearMerge: MergeMethod {
    let name = "linear"
    let base = BaseRole.asInput
    let modelCount = 1...Int.max
    let globalParameters = [ParameterSpec("normalize", .bool(true), "divide by the sum of weights")]
    let modelParameters = [ParameterSpec("weight", nil, "weight of this model")]

    func check(global: [String: ParamValue], perModel: [[String: ParamValue]]) throws {
        try checkWeightSum(global, perModel, normalizeKey: "normalize")
    }

    func linearCoefficients(global: [String: ParamValue], perModel: [[String: ParamValue]]) -> [Double]? {
        let w = perModel.map { $0["weight"]?.double ?? .nan }
        guard (global["normalize"]?.double ?? 0) != 0 else { return w }
        let total = w.reduce(0, +)
        return total == 0 ? nil : w.map { $0 / total }  // zero sums were refused at planning
    }

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        var w = c.models.indices.map { c.modelNumber($0, "weight") }
        if c.flag("normalize") {
            let total = w.reduce(0, +)
            // mergekit divides by zero here and writes Inf/NaN.
            guard total != 0 else { throw MergeError("the weights sum to 0: normalize would divide by zero") }
            w = w.map { $0 / total }
        }
        return MergeOutput(values: VectorMath.combine(c.models, w, count: c.count))
    }
}
