import CHalf

/// Element conversions between storage dtypes and f32/f64.
///
/// Sources are raw bytes straight from a mapping and may be unaligned, so every read goes
/// through an unaligned load (a plain load on x86-64). f32 -> 16-bit and 8-bit floats round to
/// nearest even; NaN stays NaN; overflow gives Inf where the format has one (F16, BF16, E5M2) and
/// NaN where it has none (E4M3FN), as numpy, ml_dtypes and torch do.
public enum Codec {
    /// Decodes `count` elements of `dtype` at `src` into f32.
    public static func decode(_ dtype: DType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        switch dtype {
        case .F32: UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 4)
        case .F16: wt_f16_to_f32(src, dst, count)
        case .BF16: wt_bf16_to_f32(src, dst, count)
        case .F64: for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
        case .F8_E4M3: let t = Float8.e4m3Table; for i in 0..<count { dst[i] = t[Int(src.load(fromByteOffset: i, as: UInt8.self))] }
        case .F8_E5M2: let t = Float8.e5m2Table; for i in 0..<count { dst[i] = t[Int(src.load(fromByteOffset: i, as: UInt8.self))] }
        default: loadIntegers(dtype, src, count: count) { i, v in dst[i] = Float(v) } 
        }
    }

    /// Decodes into f64 (statistics and comparisons; F64 and 64-bit integers keep their precision).
    public static func decode(_ dtype: DType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Double>) {
        guard count > 0 else { return }
        switch dtype {
        case .F64: UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: count * 8)
        case .I64: for i in 0..<count { dst[i] = Double(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
        case .U64: for i in 0..<count { dst[i] = Double(src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)) }
        case .F32, .F16, .BF16, .F8_E4M3, .F8_E5M2:
            // Through an f32 block: exact, since every one of these values is an f32.
            withUnsafeTemporaryAllocation(of: Float.self, capacity: min(count, 4096)) { tmp in
                var i = 0
                while i < count {
                    let n = min(4096, count - i)
                    decode(dtype, src + i * dtype.size!, count: n, into: tmp.baseAddress!)
                    for k in 0..<n { dst[i + k] = Double(tmp[k]) }
                    i += n
                }
            }
        default: loadIntegers(dtype, src, count: count) { i, v in dst[i] = v }
        }
    }

    private static func loadIntegers(_ dtype: DType, _ src: UnsafeRawPointer, count: Int, _ put: (Int, Double) -> Void) {
        switch dtype {
        case .BOOL: for i in 0..<count { put(i, src.load(fromByteOffset: i, as: UInt8.self) != 0 ? 1 : 0) }
        case .U8: for i in 0..<count { put(i, Double(src.load(fromByteOffset: i, as: UInt8.self))) }
        case .I8: for i in 0..<count { put(i, Double(src.load(fromByteOffset: i, as: Int8.self))) }
        case .I16: for i in 0..<count { put(i, Double(src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
        case .U16: for i in 0..<count { put(i, Double(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .I32: for i in 0..<count { put(i, Double(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
        case .U32: for i in 0..<count { put(i, Double(src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .I64: for i in 0..<count { put(i, Double(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self))) }
        case .U64: for i in 0..<count { put(i, Double(src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) }
        default: preconditionFailure("Codec: \(dtype.rawValue) is not decodable; check DType.isNumeric first")
        }
    }

    /// Encodes f32 values into a floating-point storage dtype.
    public static func encode(_ src: UnsafePointer<Float>, count: Int, as dtype: DType, into dst: UnsafeMutableRawPointer) {
        guard count > 0 else { return }
        switch dtype {
        case .F32: dst.copyMemory(from: src, byteCount: count * 4)
        case .F16: wt_f32_to_f16(src, dst, count)
        case .BF16: wt_f32_to_bf16(src, dst, count)
        case .F64: for i in 0..<count { dst.storeBytes(of: Double(src[i]), toByteOffset: 8 * i, as: Double.self) }
        case .F8_E4M3: for i in 0..<count { dst.storeBytes(of: Float8.e4m3.encode(src[i]), toByteOffset: i, as: UInt8.self) }
        case .F8_E5M2: for i in 0..<count { dst.storeBytes(of: Float8.e5m2.encode(src[i]), toByteOffset: i, as: UInt8.self) }
        default: preconditionFailure("Codec: cannot encode floats as \(dtype.rawValue); check DType.isFloatingPoint first")
        }
    }

    /// Converts `count` elements from one dtype to another through f32, in cache-sized blocks.
    /// Identical dtypes are copied bit for bit.
    public static func convert(_ src: UnsafeRawPointer, from: DType, count: Int, to: DType, into dst: UnsafeMutableRawPointer) {
        guard count > 0 else { return }
        if from == to { dst.copyMemory(from: src, byteCount: count * from.size!); return }
        let block = 16384
        withUnsafeTemporaryAllocation(of: Float.self, capacity: min(block, count)) { tmp in
            var i = 0
            while i < count {
                let n = min(block, count - i)
                decode(from, src + i * from.size!, count: n, into: tmp.baseAddress!)
                encode(tmp.baseAddress!, count: n, as: to, into: dst + i * to.size!)
                i += n
            }
        }
    }
}

/// 8-bit float formats (OCP FP8): E4M3FN (no Inf, max 448, NaN = S.1111.111) and E5M2 (IEEE-like).
public struct Float8: Sendable {
    public let exponentBits: Int
    public let mantissaBits: Int
    public let bias: Int
    public let hasInfinity: Bool
    public let maxFinite: Float

    public static let e4m3 = Float8(exponentBits: 4, mantissaBits: 3, bias: 7, hasInfinity: false, maxFinite: 448)
    public static let e5m2 = Float8(exponentBits: 5, mantissaBits: 2, bias: 15, hasInfinity: true, maxFinite: 57344)
    public static let e4m3Table: [Float] = (0..<256).map { e4m3.decode(UInt8($0)) }
    public static let e5m2Table: [Float] = (0..<256).map { e5m2.decode(UInt8($0)) }

    var nanBits: UInt8 { hasInfinity ? 0x7E : 0x7F }
    var infBits: UInt8 { 0x7C }

    public func decode(_ b: UInt8) -> Float {
        let sign: Float = b & 0x80 != 0 ? -1 : 1
        let e = Int(b >> mantissaBits) & ((1 << exponentBits) - 1)
        let m = Int(b) & ((1 << mantissaBits) - 1)
        let eMax = (1 << exponentBits) - 1
        if hasInfinity && e == eMax { return m == 0 ? sign * .infinity : .nan }
        if !hasInfinity && e == eMax && m == (1 << mantissaBits) - 1 { return .nan }
        if e == 0 { return sign * Float(m) * Float(sign: .plus, exponent: 1 - bias - mantissaBits, significand: 1) }
        return sign * (1 + Float(m) / Float(1 << mantissaBits)) * Float(sign: .plus, exponent: e - bias, significand: 1)
    }

    /// Round to nearest even; overflow to Inf (E5M2) or NaN (E4M3FN).
    public func encode(_ x: Float) -> UInt8 {
        let sign: UInt8 = x.sign == .minus ? 0x80 : 0
        if x.isNaN { return sign | nanBits }
        let a = abs(x)
        if a == 0 { return sign }
        let minNormalExp = 1 - bias
        let e = a.isInfinite ? Int.max : Int(a.exponent)
        if a.isInfinite { return sign | (hasInfinity ? infBits : nanBits) }
        let quantumExp = max(e, minNormalExp) - mantissaBits
        let quantum = Float(sign: .plus, exponent: quantumExp, significand: 1)
        let r = (a / quantum).rounded(.toNearestOrEven) * quantum
        if r > maxFinite { return sign | (hasInfinity ? infBits : nanBits) }
        if r == 0 { return sign }
        let re = Int(r.exponent)
        if re < minNormalExp {
            return sign | UInt8(r / Float(sign: .plus, exponent: minNormalExp - mantissaBits, significand: 1))
        }
        let m = UInt8((r / Float(sign: .plus, exponent: re, significand: 1) - 1) * Float(1 << mantissaBits))
        return sign | UInt8(re + bias) << mantissaBits | m
    }
}
