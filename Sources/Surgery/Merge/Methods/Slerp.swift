import Foundation

/// Spherical interpolation between the base (t = 0) and one other model (t = 1), over the whole
/// tensor; nearly (anti)parallel tensors (|cos| > 0.9995) are interpolated linearly.
struct SlerpMerge: MergeMethod {
    let name = "slerp"
    let base = BaseRole.required
    let modelCount = 1...1
    let globalParameters = [ParameterSpec("t", nil, "position from the base (0) to the other model (1)")]
    let modelParameters: [ParameterSpec] = []

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        let v0 = c.base!, v1 = c.models[0]
        let t = c.number("t")
        let n0 = VectorMath.norm(v0), n1 = VectorMath.norm(v1)
        // Normalised copies only for the angle; the coefficients apply to the raw tensors.
        let s0n = n0 > 1e-8 ? 1 / n0 : 1, s1n = n1 > 1e-8 ? 1 / n1 : 1
        let dot = VectorMath.dot(v0, v1) * s0n * s1n
        let (a, b): (Double, Double)
        if abs(dot) > 0.9995 {
            (a, b) = (1 - t, t)
        } else {
            let theta = acos(dot), s = sin(theta)
            (a, b) = (sin((1 - t) * theta) / s, sin(t * theta) / s)
        }
        return MergeOutput(values: VectorMath.combine([v0, v1], [a, b], count: c.count), metrics: [("cosine", .double(dot))])
    }
}
