#if canImport(Glibc)
import Glibc
#endif
import CQuant
import SafeTensors

/// Which values share one scale (and zero point): the whole tensor, one output row, or `size`
/// consecutive input elements of a row. Each is a contiguous run of the flattened tensor.
public enum Granularity: Sendable, Equatable, CustomStringConvertible {
    case tensor, channel, group(Int)

    public var isGroup: Bool { if case .group = self { return true }; return false }

    public var description: String {
        switch self { case .tensor: return "tensor"; case .channel: return "channel"; case let .group(g): return "group\(g)" }
    }

    /// Elements per scale for a [rows, cols] tensor (nil: cols does not divide into groups).
    func runLength(rows: Int, cols: Int) -> Int? {
        switch self {
        case .tensor: return rows * cols
        case .channel: return cols
        case let .group(g): return cols % g == 0 ? g : nil
        }
    }
}

/// A tensor quantized to signed b-bit integers with one (scale, zero point) per run of
/// `runLength` elements: value ≈ (q - zero) * scale, q in [-2^(b-1), 2^(b-1) - 1].
/// `zero` is integral except for HQQ's fake-quantized output, which keeps its optimised zero.
public struct IntegerQuantized: Sendable {
    public let bits: Int
    public let runLength: Int
    public var q: [Int8]
    public var scale: [Float]
    public var zero: [Float]

    public static func levels(_ bits: Int) -> (min: Int, max: Int) { (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) }

    public func dequantize(into y: UnsafeMutablePointer<Float>) {
        for g in 0..<scale.count {
            let s = scale[g], z = zero[g]
            for i in (g * runLength)..<((g + 1) * runLength) { y[i] = (Float(q[i]) - z) * s }
        }
    }
}

/// Round-to-nearest integer quantization with compressed-tensors' conventions (what vLLM loads):
/// the range always includes 0; symmetric scale = max|x| / ((2^b - 1) / 2) (int4: /7.5) and zero 0;
/// asymmetric scale = (max - min) / (2^b - 1), zero = round(qmin - min / scale); q =
/// clamp(round_half_even(x / scale + zero)). A zero scale becomes the scale dtype's epsilon. The
/// scale is rounded to the dtype it is stored in *before* it is used, so what is stored decodes to
/// exactly what was measured.
public enum IntegerRTN {
    public static func quantize(_ x: UnsafeBufferPointer<Float>, runLength: Int, bits: Int, symmetric: Bool,
                                scaleDType: DType) -> IntegerQuantized {
        let (qmin, qmax) = IntegerQuantized.levels(bits)
        let groups = x.count / runLength
        var out = IntegerQuantized(bits: bits, runLength: runLength, q: [Int8](repeating: 0, count: x.count),
                                   scale: [Float](repeating: 0, count: groups), zero: [Float](repeating: 0, count: groups))
        let eps = epsilon(scaleDType)
        out.q.withUnsafeMutableBufferPointer { q in
            for g in 0..<groups {
                let run = UnsafeBufferPointer(rebasing: x[(g * runLength)..<((g + 1) * runLength)])
                var lo: Float = 0, hi: Float = 0
                for v in run { lo = min(lo, v); hi = max(hi, v) }
                var s: Float, z: Float = 0
                if symmetric {
                    s = max(-lo, hi) / (Float(qmax - qmin) / 2)
                } else {
                    s = (hi - lo) / Float(qmax - qmin)
                }
                if s == 0 { s = eps }
                s = roundTo(scaleDType, s)
                if !symmetric { z = min(Float(qmax), max(Float(qmin), (Float(qmin) - lo / s).rounded(.toNearestOrEven))) }
                out.scale[g] = s
                out.zero[g] = z
                let base = g * runLength, qlo = Float(qmin), qhi = Float(qmax)
                let xp = run.baseAddress!, qp = q.baseAddress! + base
                for k in 0..<runLength {
                    // Clamping to integer bounds before rounding is the same as after.
                    qp[k] = Int8(roundHalfEven(min(qhi, max(qlo, xp[k] / s + z))))
                }
            }
        }
        return out
    }

    /// The smallest step of a float dtype above 1 (torch.finfo(dtype).eps).
    static func epsilon(_ d: DType) -> Float {
        switch d {
        case .BF16: return 0.0078125
        case .F16: return 0.0009765625
        default: return Float.ulpOfOne
        }
    }
}

/// The settings of the streamed RTN kernel (`wt_rtn_rows`, Sources/CQuant/rtn.c: the rules of
/// `IntegerRTN` in C) for one tensor; nil when its scales do not run within rows (tensor
/// granularity, which takes `IntegerRTN` over the whole tensor).
struct RTNStream {
    let bits: Int, run: Int, symmetric: Bool
    let scaleDType: DType
    /// 0: f32, 1: f16, 2: bf16, as the kernel takes it.
    let scaleKind: Int32
    let epsilon: Float
    /// 32-bit words of one packed row.
    let words: Int

    init?(_ q: TensorQuantizer, bits: Int, cols: Int, run: Int, weightDType: DType) {
        guard q.format != .gguf, run <= cols, cols % run == 0, (2...8).contains(bits) else { return nil }
        self.bits = bits; self.run = run; symmetric = q.effectiveSymmetric
        scaleDType = TensorQuantizer.scaleDType(for: weightDType)
        scaleKind = scaleDType == .F16 ? 1 : (scaleDType == .BF16 ? 2 : 0)
        epsilon = IntegerRTN.epsilon(scaleDType)
        words = CompressedTensorsLayout.packedWords(cols, bits: bits)
    }
}

/// Ternary {-1, 0, +1} · γ with one γ per tensor (BitNet b1.58): γ = mean |W| ("absmean"), or
/// median |W| ("BitNet b1.58 Reloaded"); q = clamp(round(W / max(γ, 1e-5)), -1, 1).
public enum Ternary {
    public enum Scale: String, Sendable { case absmean, median }

    public static func quantize(_ x: UnsafeBufferPointer<Float>, scale rule: Scale, scaleDType: DType) -> IntegerQuantized {
        var gamma: Float
        switch rule {
        case .absmean:
            var sum = 0.0
            for v in x { sum += Double(abs(v)) }
            gamma = Float(sum / Double(max(1, x.count)))
        case .median:
            // torch.median: the lower middle value.
            gamma = x.isEmpty ? 0 : Sparsifier.kthLargestMagnitude(x, x.count - (x.count - 1) / 2)
        }
        let s = roundTo(scaleDType, max(gamma, 1e-5))
        var q = [Int8](repeating: 0, count: x.count)
        for (i, v) in x.enumerated() { q[i] = Int8(clampedRound(v / s, -1, 1)) }
        return IntegerQuantized(bits: 2, runLength: max(1, x.count), q: q, scale: [s], zero: [0])
    }
}

/// FP8 E4M3 with one scale per tensor or per output row: scale = max|x| / 448, value =
/// e4m3(clamp(x / scale, ±448)) · scale (the `FP8` scheme of compressed-tensors).
public enum FP8Quantization {
    public static let maxNormal: Float = 448

    /// Returns the E4M3 bytes and the scales (one per run).
    public static func quantize(_ x: UnsafeBufferPointer<Float>, runLength: Int, scaleDType: DType) -> (codes: [UInt8], scale: [Float]) {
        let groups = x.count / runLength
        var codes = [UInt8](repeating: 0, count: x.count), scales = [Float](repeating: 0, count: groups)
        var buf = [Float](repeating: 0, count: runLength)
        for g in 0..<groups {
            var amax: Float = 0
            for i in (g * runLength)..<((g + 1) * runLength) { amax = max(amax, abs(x[i])) }
            let s = roundTo(scaleDType, amax > 0 ? amax / maxNormal : 1)
            scales[g] = s
            for k in 0..<runLength { buf[k] = min(maxNormal, max(-maxNormal, x[g * runLength + k] / s)) }
            codes.withUnsafeMutableBytes { c in
                buf.withUnsafeBufferPointer { Codec.encode($0.baseAddress!, count: runLength, as: .F8_E4M3, into: c.baseAddress! + g * runLength) }
            }
        }
        return (codes, scales)
    }

    public static func dequantize(codes: [UInt8], scale: [Float], runLength: Int, into y: UnsafeMutablePointer<Float>) {
        codes.withUnsafeBytes { Codec.decode(.F8_E4M3, $0.baseAddress!, count: codes.count, into: y) }
        for g in 0..<scale.count { for i in (g * runLength)..<((g + 1) * runLength) { y[i] *= scale[g] } }
    }
}

/// round-half-even for |v| <= 2^22 by the 1.5·2^23 trick (what ggml's nearest_int does), which
/// vectorises where rint does not.
@inline(__always) func roundHalfEven(_ v: Float) -> Float { (v + 12582912) - 12582912 }

/// round-half-even, clamped to [lo, hi]; NaN gives 0.
@inline(__always) func clampedRound(_ v: Float, _ lo: Int, _ hi: Int) -> Int {
    min(hi, max(lo, nearestInt(v)))
}

/// A value rounded to a float storage dtype (f16/bf16 round to nearest even; others kept in f32).
func roundTo(_ d: DType, _ v: Float) -> Float {
    guard d == .F16 || d == .BF16 else { return v }
    var x = v, out: Float = 0
    var raw: UInt16 = 0
    withUnsafeMutableBytes(of: &raw) { Codec.encode(&x, count: 1, as: d, into: $0.baseAddress!) }
    withUnsafeBytes(of: &raw) { Codec.decode(d, $0.baseAddress!, count: 1, into: &out) }
    return out
}

/// StatsQ, the statistical weight quantizer of "Oscillation-free Quantization for Low-bit Vision
/// Transformers" (Liu et al., ICML 2023; nbasyl/OFQ `StatsQuantizer`): calibration-free, one scale
/// per output row s = 2 · mean|W[o, :]|; x = clamp(W / s, -1, 1 - 1e-6); with n = 2^(b-1),
/// k = round_half_even(x·n - ½) clamped to [-n, n-1] (the reference can reach -n-1 at b = 1; wtool
/// clamps), and the value s·(k + ½)/n: 2^b mid-rise levels, zero not among them.
/// Stored as a (b+1)-bit symmetric integer q = 2k + 1 with scale s / 2n, which decodes to exactly
/// those levels (n is a power of two, so s / 2n is exact in f32).
public enum StatsQ {
    public static func quantize(_ x: UnsafeBufferPointer<Float>, runLength: Int, bits: Int, scaleDType: DType) -> IntegerQuantized {
        let n = 1 << (bits - 1)
        let groups = x.count / runLength
        var out = IntegerQuantized(bits: bits + 1, runLength: runLength, q: [Int8](repeating: 0, count: x.count),
                                   scale: [Float](repeating: 0, count: groups), zero: [Float](repeating: 0, count: groups))
        for g in 0..<groups {
            let run = UnsafeBufferPointer(rebasing: x[(g * runLength)..<((g + 1) * runLength)])
            var sum = 0.0
            for v in run { sum += Double(abs(v)) }
            var s = Float(2 * sum / Double(max(1, runLength)))
            if s == 0 { s = IntegerRTN.epsilon(scaleDType) }
            let upper = 1 - Float(1e-6)
            for (k, v) in run.enumerated() {
                let xv = min(upper, max(-1, v / s))
                let level = min(Float(n - 1), max(Float(-n), (xv * Float(n) - 0.5).rounded(.toNearestOrEven)))
                out.q[g * runLength + k] = Int8(2 * Int(level) + 1)
            }
            out.scale[g] = roundTo(scaleDType, s / Float(2 * n))
        }
        return out
    }
}
