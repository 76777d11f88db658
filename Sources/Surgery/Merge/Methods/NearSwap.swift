/// Nearswap: per entry, move from the base towards the other model where they are close
/// (w = clamp(t / |a - b|, 0, 1)).
struct NearSwapMerge: MergeMethod {
    let name = "nearswap"
    let base = BaseRole.required
    let modelCount = 1...1
    let globalParameters = [ParameterSpec("t", nil, "distance scale: entries closer than t are swapped fully", range: 0...1e300)]
    let modelParameters: [ParameterSpec] = []

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        let a = c.base!, b = c.models[0], t = c.number("t")
        var out = [Float](repeating: 0, count: c.count)
        for i in out.indices {
            let w = min(1, max(0, t / max(abs(Double(a[i]) - Double(b[i])), 1e-6)))
            out[i] = Float(w * Double(b[i]) + (1 - w) * Double(a[i]))
        }
        return MergeOutput(values: out)
    }
}
