import SafeTensors
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

extension KarcherMerge: StreamedMergeMethod {
    /// One step of the iteration, as scalars: with them, each entry of the next direction follows
    /// from that entry of the previous one and of the unit inputs alone.
    private struct Step { let vecs: [Int]; let coeffs: [Double]; let uCoeff: Double; let tn: Double; let nn: Double }

    /// The iteration replayed per block: a pass per reduction (the norms, ||u0||, then per
    /// iteration <u, unit_i>, ||T|| and the new ||u||), each block's u rebuilt from the steps so far
    /// with `merge`'s f32 roundings. Memory stays a few blocks; time grows with the iterations².
    func mergeStreamed(_ c: StreamedMergeContext, write: (Int, UnsafeBufferPointer<Float>) throws -> Void) throws -> [(String, JSONValue)] {
        let tol = c.number("tol"), maxIter = Int(c.number("max_iter"))
        let n = c.count, N = c.models.count, alpha = 1 / Double(N)
        var sums = (0..<N).map { _ in VectorMath.DotSum(count: n) }
        c.pass { start, len, _, x in for m in 0..<N { sums[m].add(x[m], x[m], count: len, at: start) } }
        let norms = sums.map { $0.total.squareRoot() }
        let valid = norms.indices.filter { norms[$0] > tol }
        let block = max(1, c.blockLength)
        let u = UnsafeMutablePointer<Float>.allocate(capacity: block), t = UnsafeMutablePointer<Float>.allocate(capacity: block)
        defer { u.deallocate(); t.deallocate() }
        guard !valid.isEmpty else {
            t.update(repeating: 0, count: block)
            try c.pass { start, len, _, _ in try write(start, UnsafeBufferPointer(start: t, count: len)) }
            return []   // as merge: no iterations metric when every input is zero
        }
        let a = alpha / (Double(valid.count) * alpha)
        /// Units in place (x / ||x||, zeros for a zero tensor) and u0 = Σ a unit_i over the valid ones into `u`.
        func start(_ x: [UnsafeMutablePointer<Float>], _ len: Int) {
            for m in 0..<N {
                if norms[m] > 0 { for k in 0..<len { x[m][k] = Float(Double(x[m][k]) / norms[m]) } } else { x[m].update(repeating: 0, count: len) }
            }
            VectorMath.combine(valid.map { UnsafePointer(x[$0]) }, Array(repeating: a, count: valid.count), count: len, into: u)
        }
        var u0 = VectorMath.DotSum(count: n)
        c.pass { s, len, _, x in start(x, len); u0.add(u, u, count: len, at: s) }
        let un = u0.total.squareRoot()
        /// T = Σ coeffs_j unit_j + uCoeff u into `t`.
        func tangent(_ x: [UnsafeMutablePointer<Float>], _ step: (vecs: [Int], coeffs: [Double], uCoeff: Double), _ len: Int) {
            VectorMath.combine(step.vecs.map { UnsafePointer(x[$0]) } + [UnsafePointer(u)], step.coeffs + [step.uCoeff], count: len, into: t)
        }
        func move(_ tn: Double, _ len: Int) { for k in 0..<len { u[k] = Float(cos(tn) * Double(u[k]) + sin(tn) * Double(t[k]) / tn) } }
        /// u after `steps`, for one block (units in place in x).
        func direction(_ x: [UnsafeMutablePointer<Float>], _ len: Int, _ steps: [Step]) {
            start(x, len)
            if un < tol { u.update(from: x[valid[0]], count: len) } else { for k in 0..<len { u[k] = Float(Double(u[k]) / un) } }
            for s in steps {
                tangent(x, (s.vecs, s.coeffs, s.uCoeff), len)
                move(s.tn, len)
                for k in 0..<len { u[k] = Float(Double(u[k]) / s.nn) }
            }
        }
        var steps: [Step] = []
        var iterations = 0
        for _ in 0..<maxIter {
            var dots = valid.map { _ in VectorMath.DotSum(count: n) }
            c.pass { s, len, _, x in direction(x, len, steps); for (j, i) in valid.enumerated() { dots[j].add(u, x[i], count: len, at: s) } }
            var vecs: [Int] = [], coeffs: [Double] = [], uCoeff = 0.0
            for (j, i) in valid.enumerated() {
                let cosT = min(1, max(-1, dots[j].total))
                let theta = acos(cosT)
                guard theta >= tol else { continue }
                let f = a * theta / sin(theta)
                vecs.append(i); coeffs.append(f)
                uCoeff -= f * cosT
            }
            var tSum = VectorMath.DotSum(count: n)
            c.pass { s, len, _, x in direction(x, len, steps); tangent(x, (vecs, coeffs, uCoeff), len); tSum.add(t, t, count: len, at: s) }
            let tn = tSum.total.squareRoot()
            iterations += 1
            if tn < tol { break }
            var uSum = VectorMath.DotSum(count: n)
            c.pass { s, len, _, x in direction(x, len, steps); tangent(x, (vecs, coeffs, uCoeff), len); move(tn, len); uSum.add(u, u, count: len, at: s) }
            steps.append(Step(vecs: vecs, coeffs: coeffs, uCoeff: uCoeff, tn: tn, nn: uSum.total.squareRoot()))
        }
        let scale = norms.reduce(0) { $0 + alpha * $1 }
        try c.pass { s, len, _, x in
            direction(x, len, steps)
            for k in 0..<len { t[k] = Float(Double(u[k]) * scale) }
            try write(s, UnsafeBufferPointer(start: t, count: len))
        }
        return [("iterations", .int(iterations))]
    }
}
