import Foundation

/// The Karcher (Riemannian) mean of the models' directions on the unit sphere, scaled by their
/// mean norm; every input weighs 1/N.
struct KarcherMerge: MergeMethod {
    let name = "karcher"
    let base = BaseRole.asInput
    let modelCount = 1...Int.max
    let globalParameters = [ParameterSpec("max_iter", .number(10), "iterations at most", range: 0...100_000),
                            ParameterSpec("tol", .number(1e-5), "stop when the tangent step is below this", range: 0...1e300)]
    let modelParameters: [ParameterSpec] = []

    func merge(_ c: consuming MergeContext) throws -> MergeOutput {
        let tol = c.number("tol"), maxIter = Int(c.number("max_iter"))
        let n = c.count, N = c.models.count
        let alpha = 1 / Double(N)
        let norms = c.models.map(VectorMath.norm)
        let units = zip(c.models, norms).map { x, nrm in nrm > 0 ? x.map { Float(Double($0) / nrm) } : [Float](repeating: 0, count: n) }
        let valid = norms.indices.filter { norms[$0] > tol }
        guard !valid.isEmpty else { return MergeOutput(values: [Float](repeating: 0, count: n)) }
        let a = alpha / (Double(valid.count) * alpha)
        var u = VectorMath.combine(valid.map { units[$0] }, Array(repeating: a, count: valid.count), count: n)
        let un = VectorMath.norm(u)
        u = un < tol ? units[valid[0]] : u.map { Float(Double($0) / un) }
        var iterations = 0
        for _ in 0..<maxIter {
            var coeffs: [Double] = [], vecs: [[Float]] = []
            var uCoeff = 0.0
            for i in valid {
                let cosT = min(1, max(-1, VectorMath.dot(u, units[i])))
                let theta = acos(cosT)
                guard theta >= tol else { continue }
                let f = a * theta / sin(theta)
                coeffs.append(f); vecs.append(units[i])
                uCoeff -= f * cosT
            }
            let T = VectorMath.combine(vecs + [u], coeffs + [uCoeff], count: n)
            let tn = VectorMath.norm(T)
            iterations += 1
            if tn < tol { break }
            u = (0..<n).map { Float(cos(tn) * Double(u[$0]) + sin(tn) * Double(T[$0]) / tn) }
            let nn = VectorMath.norm(u)
            u = u.map { Float(Double($0) / nn) }
        }
        let scale = norms.reduce(0) { $0 + alpha * $1 }
        return MergeOutput(values: u.map { Float(Double($0) * scale) }, metrics: [("iterations", .int(iterations))])
    }
}
