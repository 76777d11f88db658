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
        let out = [Float](unsafeUninitializedCapacity: c.count) { o, done in
            a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in
                NearSwapMerge.swap(pa.baseAddress!, pb.baseAddress!, count: c.count, t: t, into: o.baseAddress!)
            } }
            done = c.count
        }
        return MergeOutput(values: out)
    }

    /// Entry by entry (so blocks of a tensor can be merged alone).
    static func swap(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int, t: Double, into out: UnsafeMutablePointer<Float>) {
        for i in 0..<count {
            let w = min(1, max(0, t / max(abs(Double(a[i]) - Double(b[i])), 1e-6)))
            out[i] = Float(w * Double(b[i]) + (1 - w) * Double(a[i]))
        }
    }
}
