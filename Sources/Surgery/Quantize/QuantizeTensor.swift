import SafeTensors

/// What one quantized tensor becomes: the stored pieces (in the order the format names them) and
/// the values a reader decodes them to, from which the error is measured.
struct QuantizedPieces {
    /// Bytes of each output tensor of this weight (GGUF: one; compressed-tensors: packed, scale,
    /// shape, zero point...; fake: one).
    var blobs: [[UInt8]]
    var decoded: [Float]
    var extra: [(String, JSONValue)] = []
}

/// The math of `wtool quantize` for one 2-D (or flattened) tensor, format by format.
struct TensorQuantizer: Sendable {
    let scheme: QuantScheme
    let format: QuantFormat
    let granularity: Granularity
    let symmetric: Bool

    /// The outputs one quantized weight produces: (name suffix replacing `weight`, dtype, shape).
    /// GGUF and fake keep the name.
    func outputs(rows: Int, cols: Int, run: Int, weightDType: DType) -> [(suffix: String, dtype: DType, shape: [Int])] {
        guard format == .compressedTensors else { return [] }
        let scaleDType = TensorQuantizer.scaleDType(for: weightDType)
        let scaleShape: [Int]
        switch granularity {
        case .tensor: scaleShape = [1]
        case .channel: scaleShape = [rows, 1]
        case .group: scaleShape = [rows, cols / run]
        }
        if case .fp8 = scheme {
            return [("weight", .F8_E4M3, [rows, cols]), ("weight_scale", scaleDType, scaleShape)]
        }
        let bits = scheme.storedBits
        var out: [(String, DType, [Int])] = [
            ("weight_packed", .I32, [rows, CompressedTensorsLayout.packedWords(cols, bits: bits)]),
            ("weight_scale", scaleDType, scaleShape),
            ("weight_shape", .I64, [2]),
        ]
        if !effectiveSymmetric {
            switch granularity {
            case .tensor: out.append(("weight_zero_point", .I8, [1]))
            case .channel, .group:
                out.append(("weight_zero_point", .I32, [CompressedTensorsLayout.packedWords(rows, bits: bits), scaleShape[1]]))
            }
        }
        return out
    }

    /// HQQ always has a zero point; ternary never.
    var effectiveSymmetric: Bool {
        switch scheme {
        case .hqq: return false
        case .ternary, .fp8, .statsQ: return true
        default: return symmetric
        }
    }

    /// Scales are stored in the weight's 16-bit dtype, else f32.
    static func scaleDType(for d: DType) -> DType { d == .BF16 || d == .F16 ? d : .F32 }

    func quantize(_ x: [Float], rows: Int, cols: Int, run: Int, weightDType: DType) -> QuantizedPieces {
        let n = x.count
        var decoded = [Float](repeating: 0, count: n)
        let scaleDType = TensorQuantizer.scaleDType(for: weightDType)
        switch scheme {
        case .ggml, .mix:
            let t = scheme.blockType!
            var blob = [UInt8](repeating: 0, count: t.rowBytes(n))
            x.withUnsafeBufferPointer { xp in blob.withUnsafeMutableBytes { t.encode(xp.baseAddress!, count: n, into: $0.baseAddress!) } }
            blob.withUnsafeBytes { b in decoded.withUnsafeMutableBufferPointer { t.decode(b.baseAddress!, count: n, into: $0.baseAddress!) } }
            return QuantizedPieces(blobs: format == .gguf ? [blob] : [], decoded: decoded)
        case .fp8:
            let (codes, scales) = x.withUnsafeBufferPointer { FP8Quantization.quantize($0, runLength: run, scaleDType: scaleDType) }
            decoded.withUnsafeMutableBufferPointer { FP8Quantization.dequantize(codes: codes, scale: scales, runLength: run, into: $0.baseAddress!) }
            roundInPlace(&decoded, to: scaleDType)
            return QuantizedPieces(blobs: format == .compressedTensors ? [codes, encodeFloats(scales, as: scaleDType)] : [], decoded: decoded)
        case .integer, .hqq, .ternary, .statsQ:
            var extra: [(String, JSONValue)] = []
            let q: IntegerQuantized
            switch scheme {
            case let .integer(b):
                q = x.withUnsafeBufferPointer { IntegerRTN.quantize($0, runLength: run, bits: b, symmetric: symmetric, scaleDType: scaleDType) }
            case let .hqq(b):
                let r = x.withUnsafeBufferPointer { HQQ.quantize($0, runLength: run, bits: b, scaleDType: scaleDType) }
                q = r.quantized
                var base = ErrorAccumulator(), rtnValues = [Float](repeating: 0, count: n)
                rtnValues.withUnsafeMutableBufferPointer { r.rtn.dequantize(into: $0.baseAddress!) }
                roundInPlace(&rtnValues, to: scaleDType)
                x.withUnsafeBufferPointer { a in rtnValues.withUnsafeBufferPointer { base.add(a.baseAddress!, $0.baseAddress!, count: n) } }
                extra = [("hqq_iterations", .int(r.iterations))] + errorMetrics(base, prefix: "rtn_")
            case let .ternary(rule):
                q = x.withUnsafeBufferPointer { Ternary.quantize($0, scale: rule, scaleDType: scaleDType) }
            case let .statsQ(b):
                q = x.withUnsafeBufferPointer { StatsQ.quantize($0, runLength: run, bits: b, scaleDType: scaleDType) }
                // beside it, min-max round-to-nearest at the same bit width and granularity
                let rtn = x.withUnsafeBufferPointer { IntegerRTN.quantize($0, runLength: run, bits: b, symmetric: true, scaleDType: scaleDType) }
                var base = ErrorAccumulator(), rtnValues = [Float](repeating: 0, count: n)
                rtnValues.withUnsafeMutableBufferPointer { rtn.dequantize(into: $0.baseAddress!) }
                roundInPlace(&rtnValues, to: scaleDType)
                x.withUnsafeBufferPointer { a in rtnValues.withUnsafeBufferPointer { base.add(a.baseAddress!, $0.baseAddress!, count: n) } }
                extra = errorMetrics(base, prefix: "rtn_")
            default: fatalError("unreachable")
            }
            decoded.withUnsafeMutableBufferPointer { q.dequantize(into: $0.baseAddress!) }
            roundInPlace(&decoded, to: scaleDType)
            var pieces = QuantizedPieces(blobs: [], decoded: decoded, extra: extra)
            if format == .compressedTensors {
                let bits = scheme.storedBits
                pieces.blobs = [int32Bytes(CompressedTensorsLayout.pack(q.q, rows: rows, cols: cols, bits: bits)),
                                encodeFloats(q.scale, as: scaleDType), int64Bytes([Int64(rows), Int64(cols)])]
                if !effectiveSymmetric {
                    let zp = q.zero.map { Int8(clampedRound($0, -128, 127)) }
                    switch granularity {
                    case .tensor: pieces.blobs.append(zp.map { UInt8(bitPattern: $0) })
                    case .channel, .group:
                        pieces.blobs.append(int32Bytes(CompressedTensorsLayout.packColumns(zp, rows: rows, cols: q.scale.count / rows, bits: bits)))
                    }
                }
            }
            return pieces
        }
    }

}

/// compressed-tensors decodes in the scale's dtype ((q - zp) · scale, then cast to the model's):
/// round what wtool decodes the same way, so the measured error and the fake output are what an
/// engine computes. A no-op for f32 scales.
func roundInPlace(_ v: inout [Float], to d: DType) {
    guard d == .BF16 || d == .F16 else { return }
    var raw = [UInt8](repeating: 0, count: v.count * 2)
    v.withUnsafeMutableBufferPointer { p in
        raw.withUnsafeMutableBytes { r in
            Codec.encode(p.baseAddress!, count: p.count, as: d, into: r.baseAddress!)
            Codec.decode(d, UnsafeRawPointer(r.baseAddress!), count: p.count, into: p.baseAddress!)
        }
    }
}

func int32Bytes(_ v: [Int32]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }
func int64Bytes(_ v: [Int64]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }

/// The report's error block: MSE, relative Frobenius error, SQNR (dB), max abs error.
func errorMetrics(_ e: ErrorAccumulator, prefix: String = "") -> [(String, JSONValue)] {
    metric(prefix + "mse", e.meanSquared) + metric(prefix + "relative_error", e.relative)
        + metric(prefix + "sqnr_db", e.sqnrDB) + metric(prefix + "max_abs_error", e.maxAbs)
}
