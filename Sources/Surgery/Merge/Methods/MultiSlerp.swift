import Foundation

/// Spherical weighted average of several models (or of their deltas from an optional base) on
/// the unit sphere, rescaled by the weighted mean norm (mergekit's multislerp).
struct MultiSlerpMerge: MergeMethod {
    let name = "multislerp"
    let base = BaseRole.optional
    let modelCount = 1...Int.max
    let globalParameters = [ParameterSpec("normalize_weights", .bool(true), "divide the weights by their sum"),
                            ParameterSpec("eps", .number(1e-8), "numerical guard", range: 0...1e300)]
    let modelParameters = [ParameterSpec("weight", nil, "weight of this model")]

    func check(global: [String: ParamValue], perModel: [[String: ParamValue]]) throws {
        try checkWeightSum(global, perModel, normalizeKey: "normalize_weights")
    }

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        let eps = c.number("eps")
        var w = c.models.indices.map { c.modelNumber($0, "weight") }
        if c.flag("normalize_weights") {
            let s = w.reduce(0, +)
            guard s != 0 else { throw MergeError("the weights sum to 0: normalize_weights would divide by zero") }
            w = w.map { $0 / s }
        }
        let xs = c.base.map { b in c.models.map { VectorMath.sub($0, b) } } ?? c.models
        let norms = xs.map(VectorMath.norm)
        let units = zip(xs, norms).map { x, nrm in x.map { Float(Double($0) / (nrm + eps)) } }
        let n = c.count
        let m = VectorMath.combine(units, w, count: n)
        let mNorm = VectorMath.norm(m)
        var out: [Float]
        if mNorm < eps {
            guard xs.count == 2 else { throw MergeError("multislerp: the weighted mean direction vanishes (antipodal inputs)") }
            out = VectorMath.combine(xs, w, count: n)
        } else {
            let mh = m.map { Float(Double($0) / mNorm) }
            // Project each unit vector onto the tangent plane at m̂, then step along the mean.
            let tangents = units.map { u -> [Float] in
                let p = VectorMath.dot(u, mh)
                return zip(u, mh).map { Float(Double($0) - p * Double($1)) }
            }
            let tau = VectorMath.combine(tangents, w, count: n)
            let L = VectorMath.norm(tau) + eps
            let scale = zip(w, norms).reduce(0.0) { $0 + $1.0 * $1.1 }
            out = (0..<n).map { i in Float((Double(mh[i]) * cos(L) + Double(tau[i]) * sin(L) / L) * scale) }
        }
        if let b = c.base { for i in 0..<n { out[i] += b[i] } }
        return MergeOutput(values: out)
    }
}
