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
        let k = SlerpMerge.coefficients(squares0: VectorMath.dot(v0, v0), squares1: VectorMath.dot(v1, v1), dot: VectorMath.dot(v0, v1), t: c.number("t"))
        return MergeOutput(values: VectorMath.combine([v0, v1], [k.a, k.b], count: c.count), metrics: [("cosine", .double(k.cosine))])
    }

    /// The coefficients of the base and the other model from ||v0||², ||v1||² and <v0, v1>: the
    /// output is a v0 + b v1 (so a tensor too large to hold decoded takes two streamed passes).
    static func coefficients(squares0: Double, squares1: Double, dot raw: Double, t: Double) -> (a: Double, b: Double, cosine: Double) {
        let n0 = squares0.squareRoot(), n1 = squares1.squareRoot()
        // Normalised copies only for the angle; the coefficients apply to the raw tensors.
        let s0n = n0 > 1e-8 ? 1 / n0 : 1, s1n = n1 > 1e-8 ? 1 / n1 : 1
        let dot = raw * s0n * s1n
        if abs(dot) > 0.9995 { return (1 - t, t, dot) }
        let theta = acos(dot), s = sin(theta)
        return (sin((1 - t) * theta) / s, sin(t * theta) / s, dot)
    }
}
