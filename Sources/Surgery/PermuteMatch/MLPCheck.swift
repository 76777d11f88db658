import Linalg
import SafeTensors

/// `--verify` for MLP chains: both models run on the same seeded random inputs (ReLU between
/// layers; any elementwise activation commutes with a permutation alike) and the largest logit
/// difference is reported. A correct re-indexing differs only by f32 summation order.
enum MLPCheck {
    struct Result: Sendable {
        let maxAbsDifference: Double
        let maxAbsLogit: Double
        let inputs: Int
    }

    /// `layers`: the chain's (weight, bias?) names in order, as the MLP spec lists them.
    static func compare(_ x: Checkpoint, _ y: Checkpoint, layers: [(weight: String, bias: String?)], seed: UInt64, inputs: Int = 64) -> Result {
        let first = x.entry(layers[0].weight)!
        let width = Int(first.info.shape[1])
        var rng = SeededRNG(seed: seed, stream: "permute-match/verify")
        let input = Matrix(rows: inputs, cols: width, data: (0..<(inputs * width)).map { _ in rng.nextGaussian() })
        let lx = forward(x, layers, input), ly = forward(y, layers, input)
        var diff = 0.0, scale = 0.0
        for (p, q) in zip(lx.data, ly.data) {
            diff = max(diff, abs(Double(p) - Double(q)))
            scale = max(scale, abs(Double(p)))
        }
        return Result(maxAbsDifference: diff, maxAbsLogit: scale, inputs: inputs)
    }

    private static func forward(_ c: Checkpoint, _ layers: [(weight: String, bias: String?)], _ input: Matrix) -> Matrix {
        var h = input
        for (k, layer) in layers.enumerated() {
            let e = c.entry(layer.weight)!
            let w = Matrix(rows: Int(e.info.shape[0]), cols: Int(e.info.shape[1]), data: decodeFloats(c, e))
            var z = matmul(h, w, transB: true)
            if let bn = layer.bias, let be = c.entry(bn) {
                let bias = decodeFloats(c, be)
                for r in 0..<z.rows { for j in 0..<z.cols { z[r, j] += bias[j] } }
            }
            if k < layers.count - 1 { for i in z.data.indices { z.data[i] = max(0, z.data[i]) } }
            h = z
        }
        return h
    }

    /// The chain of an MLP spec: its weights in order, each with its bias when present.
    static func layers(of spec: PermutationSpec) -> [(weight: String, bias: String?)] {
        var out: [(weight: String, bias: String?)] = []
        for t in spec.tensors where t.name.hasSuffix(".weight") {
            let base = String(t.name.dropLast(7))
            out.append((t.name, spec.tensor(base + ".bias") != nil ? base + ".bias" : nil))
        }
        return out
    }
}
