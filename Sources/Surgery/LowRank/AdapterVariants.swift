import Foundation
import Linalg

/// The merges of PEFT's adapter types beyond LoRA, as `merge_and_unload` computes them (peft
/// 0.21): DoRA's magnitude renormalisation, MiSS/Bone's block sharing, FourierFT's spectral delta.
/// Every function takes the base weight as stored ([out, in] for Linear, [in, out] for GPT-2's
/// Conv1D, [vocab, dim] for embeddings) and returns the merged weight in the same layout.
enum AdapterVariants {
    /// DoRA (Liu et al., 2024): V = W₀ + ΔW (ΔW = s·BA laid out like W₀), then each output
    /// feature rescaled to its learned magnitude: W' = m / ||V|| · V, the norm over the input
    /// axis. For a plain Linear that is per row; for Conv1D (fan_in_fan_out) and embeddings, whose
    /// output features are columns of the stored matrix, per column.
    static func dora(base w: [Float], delta: [Float], rows: Int, cols: Int, magnitude m: [Float], perColumn: Bool) -> [Float] {
        var v = [Double](repeating: 0, count: w.count)
        for i in 0..<w.count { v[i] = Double(Float(Double(w[i]) + Double(delta[i]))) }   // V in f32, as PEFT adds
        var norms = [Double](repeating: 0, count: perColumn ? cols : rows)
        for r in 0..<rows {
            for c in 0..<cols {
                let x = v[r * cols + c]
                norms[perColumn ? c : r] += x * x
            }
        }
        var out = [Float](repeating: 0, count: w.count)
        for r in 0..<rows {
            for c in 0..<cols {
                let k = perColumn ? c : r
                let n = Double(Float(norms[k].squareRoot()))
                out[r * cols + c] = Float(Double(m[k]) / n * v[r * cols + c])
            }
        }
        return out
    }

    /// MiSS (ex-Bone): one shared block B. standard, B [r, out]: W'[o, i] = W[o, i] + B[i mod r, o];
    /// mini, B [r, mini_r]: + B[i mod r, o mod mini_r]; bat, B [out/r, r, r]: every r x r tile
    /// W_(a,c) becomes W_(a,c) (I + B[a]) + B[a]. In f64 per entry (PEFT: f32).
    static func miss(base w: [Float], rows out: Int, cols inp: Int, block b: [Float], blockShape: [Int], variant: PEFTAdapterConfig.MiSSVariant) -> [Float] {
        var y = [Float](repeating: 0, count: w.count)
        switch variant {
        case .standard, .mini:
            let r = blockShape[0], width = blockShape[1]
            for o in 0..<out {
                for i in 0..<inp { y[o * inp + i] = Float(Double(w[o * inp + i]) + Double(b[(i % r) * width + o % width])) }
            }
        case .bat:
            let r = blockShape[1]
            for a in 0..<(out / r) {
                let ba = a * r * r
                for c in 0..<(inp / r) {
                    for p in 0..<r {
                        for q in 0..<r {
                            var s = Double(w[(a * r + p) * inp + c * r + q]) + Double(b[ba + p * r + q])
                            for t in 0..<r { s += Double(w[(a * r + p) * inp + c * r + t]) * Double(b[ba + t * r + q]) }
                            y[(a * r + p) * inp + c * r + q] = Float(s)
                        }
                    }
                }
            }
        }
        return y
    }

    /// FourierFT (Gao et al., 2024): the spectrum's n coefficients at the locations torch.randperm
    /// draws from random_loc_seed, ΔW = Re(ifft2(S)) · scaling, i.e.
    /// ΔW[p, q] = scaling / (out·in) · Σ_k s_k cos(2π (p·row_k/out + q·col_k/in)),
    /// computed as two f32 GEMMs (cos and sin factors, angles reduced exactly in integers first).
    /// Returns ΔW [out, in].
    static func fourierDelta(spectrum s: [Float], out: Int, inp: Int, seed: Int64, scaling: Double) -> [Float] {
        let n = s.count
        let idx = TorchRandperm.prefix(n: out * inp, count: n, seed: seed)
        var uc = [Float](repeating: 0, count: out * n), us = uc
        var vc = [Float](repeating: 0, count: inp * n), vs = vc
        for k in 0..<n {
            let row = idx[k] / inp, col = idx[k] % inp
            for p in 0..<out {
                let a = 2 * Double.pi * Double((p * row) % out) / Double(out)
                uc[p * n + k] = Float(Double(s[k]) * cos(a)); us[p * n + k] = Float(Double(s[k]) * sin(a))
            }
            for q in 0..<inp {
                let a = 2 * Double.pi * Double((q * col) % inp) / Double(inp)
                vc[q * n + k] = Float(cos(a)); vs[q * n + k] = Float(sin(a))
            }
        }
        var d = [Float](repeating: 0, count: out * inp), t = d
        uc.withUnsafeBufferPointer { a in vc.withUnsafeBufferPointer { b in d.withUnsafeMutableBufferPointer { c in
            sgemm(transA: false, transB: true, m: out, n: inp, k: n, a.baseAddress!, lda: n, b.baseAddress!, ldb: n, into: c.baseAddress!)
        } } }
        us.withUnsafeBufferPointer { a in vs.withUnsafeBufferPointer { b in t.withUnsafeMutableBufferPointer { c in
            sgemm(transA: false, transB: true, m: out, n: inp, k: n, a.baseAddress!, lda: n, b.baseAddress!, ldb: n, into: c.baseAddress!)
        } } }
        let f = scaling / Double(out * inp)
        for i in 0..<d.count { d[i] = Float(f * (Double(d[i]) - Double(t[i]))) }
        return d
    }
}
