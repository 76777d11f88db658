import SafeTensors
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

extension MultiSlerpMerge: StreamedMergeMethod {
    /// Five passes, each rebuilding per entry the values `merge` holds as whole vectors (with the same
    /// f32 roundings): the norms of the inputs, ||m||, <u_i, m̂> for each input, ||τ||, the output.
    func mergeStreamed(_ c: StreamedMergeContext, write: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws -> [(String, JSONValue)] {
        let eps = c.number("eps"), n = c.count, M = c.models.count
        var w = (0..<M).map { c.modelNumber($0, "weight") }
        if c.flag("normalize_weights") {
            let s = w.reduce(0, +)
            guard s != 0 else { throw MergeError("the weights sum to 0: normalize_weights would divide by zero") }
            w = w.map { $0 / s }
        }
        /// x_i (deltas from the base when there is one), in place.
        func inputs(_ base: UnsafeMutablePointer<Float>?, _ x: [UnsafeMutablePointer<Float>], _ len: Int) {
            guard let base else { return }
            for m in 0..<M { for k in 0..<len { x[m][k] -= base[k] } }
        }
        var sums = (0..<M).map { _ in VectorMath.DotSum(count: n) }
        c.pass { start, len, base, x in inputs(base, x, len); for m in 0..<M { sums[m].add(x[m], x[m], count: len, at: start) } }
        let norms = sums.map { $0.total.squareRoot() }
        /// u_i = x_i / (||x_i|| + eps) in place, and m = Σ w_i u_i into `mean`.
        let mean = UnsafeMutablePointer<Float>.allocate(capacity: max(1, c.blockLength))
        let out = UnsafeMutablePointer<Float>.allocate(capacity: max(1, c.blockLength))
        defer { mean.deallocate(); out.deallocate() }
        func units(_ base: UnsafeMutablePointer<Float>?, _ x: [UnsafeMutablePointer<Float>], _ len: Int) {
            inputs(base, x, len)
            for m in 0..<M { for k in 0..<len { x[m][k] = Float(Double(x[m][k]) / (norms[m] + eps)) } }
            combine(x, w, len, into: mean)
        }
        var meanSum = VectorMath.DotSum(count: n)
        c.pass { start, len, base, x in units(base, x, len); meanSum.add(mean, mean, count: len, at: start) }
        let mNorm = meanSum.total.squareRoot()
        if mNorm < eps {
            guard M == 2 else { throw MergeError("multislerp: the weighted mean direction vanishes (antipodal inputs)") }
            try c.pass { start, len, base, x in
                inputs(base, x, len)
                combine(x, w, len, into: out)
                if let base { for k in 0..<len { out[k] += base[k] } }
                try write(start, UnsafeBufferPointer(start: out, count: len))
            }
            return []
        }
        /// m̂ in `mean` (after `units`).
        func direction(_ len: Int) { for k in 0..<len { mean[k] = Float(Double(mean[k]) / mNorm) } }
        var projections = (0..<M).map { _ in VectorMath.DotSum(count: n) }
        c.pass { start, len, base, x in
            units(base, x, len); direction(len)
            for m in 0..<M { projections[m].add(x[m], mean, count: len, at: start) }
        }
        let p = projections.map(\.total)
        /// τ = Σ w_i (u_i - p_i m̂) into `out` (the tangents rounded to f32 as `merge` stores them).
        func tangent(_ x: [UnsafeMutablePointer<Float>], _ len: Int) {
            for m in 0..<M { for k in 0..<len { x[m][k] = Float(Double(x[m][k]) - p[m] * Double(mean[k])) } }
            combine(x, w, len, into: out)
        }
        var tauSum = VectorMath.DotSum(count: n)
        c.pass { start, len, base, x in units(base, x, len); direction(len); tangent(x, len); tauSum.add(out, out, count: len, at: start) }
        let L = tauSum.total.squareRoot() + eps
        let scale = zip(w, norms).reduce(0.0) { $0 + $1.0 * $1.1 }
        try c.pass { start, len, base, x in
            units(base, x, len); direction(len); tangent(x, len)
            for k in 0..<len { out[k] = Float((Double(mean[k]) * cos(L) + Double(out[k]) * sin(L) / L) * scale) }
            if let base { for k in 0..<len { out[k] += base[k] } }
            try write(start, UnsafeBufferPointer(start: out, count: len))
        }
        return []
    }

    private func combine(_ x: [UnsafeMutablePointer<Float>], _ c: [Double], _ len: Int, into out: UnsafeMutablePointer<Float>) {
        VectorMath.combine(x.map { UnsafePointer($0) }, c, count: len, into: out)
    }
}
