/// Copies its one input (optionally scaled): stacks layers from slices (frankenmerges).
struct PassthroughMerge: MergeMethod {
    let name = "passthrough"
    let base = BaseRole.none
    let modelCount = 1...1
    let globalParameters: [ParameterSpec] = []
    let modelParameters = [ParameterSpec("scale", .number(1), "multiplies the tensor")]

    func linearCoefficients(global: [String: ParamValue], perModel: [[String: ParamValue]]) -> [Double]? {
        [perModel[0]["scale"]?.double ?? 1]
    }

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        let s = Float(c.modelNumber(0, "scale"))
        return MergeOutput(values: s == 1 ? c.models[0] : c.models[0].map { $0 * s })
    }
}
