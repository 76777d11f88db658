import SafeTensors

/// Where weight matching reads a model's tensors, as f32, by the bound spec's tensor index.
/// Tensors are decoded on demand and dropped after use, so memory holds a few tensors at a time.
protocol FloatTensors: Sendable {
    func floats(_ t: Int) -> [Float]
}

/// A checkpoint's tensors, in the order of the spec's tensor list (looked up by name).
struct CheckpointTensors: FloatTensors {
    let checkpoint: Checkpoint
    let entries: [Checkpoint.Entry]
    init(_ c: Checkpoint, names: [String]) {
        checkpoint = c
        entries = names.map { c.entry($0)! }
    }
    func floats(_ t: Int) -> [Float] { decodeFloats(checkpoint, entries[t]) }
}

/// Another model's tensors with permutations applied on the fly (the planted self-test's B).
struct PermutedTensors: FloatTensors {
    let base: CheckpointTensors
    let spec: BoundSpec
    let perms: [String: [Int]]
    func floats(_ t: Int) -> [Float] {
        Gather.floats(base.floats(t), shape: spec.tensors[t].shape, spec.indexVectors(tensor: t, perms))
    }
}
