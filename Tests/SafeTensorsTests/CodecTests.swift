import XCTest
@testable import SafeTensors

final class CodecTests: XCTestCase {
    func bf16(_ bits: UInt32) -> UInt16 {
        var f = Float(bitPattern: bits)
        var out: UInt16 = 0
        Codec.encode(&f, count: 1, as: .BF16, into: &out)
        return out
    }

    func testBF16RoundsToNearestEvenAndKeepsNaN() {
        XCTAssertEqual(bf16(0x3F80_8000), 0x3F80)  // tie to even (down)
        XCTAssertEqual(bf16(0x3F81_8000), 0x3F82)  // tie to even (up)
        XCTAssertEqual(bf16(0x3F80_8001), 0x3F81)
        XCTAssertEqual(bf16(0x7F7F_FFFF), 0x7F80)  // overflow to +Inf
        XCTAssertEqual(bf16(0x7F80_0001), 0x7FC0)  // signalling NaN stays NaN
        XCTAssertEqual(bf16(0xFFC0_0001), 0xFFC0)
    }

    /// bf16 -> f32 is the 16 bits moved to the top, NaN payloads included: every pattern, from a
    /// source one byte off alignment, at several lengths.
    func testBF16DecodesEveryPattern() {
        let patterns = (0...0xFFFF).map { UInt16($0) }
        var bytes = [UInt8](repeating: 0xAB, count: 1 + 2 * patterns.count)
        for (i, h) in patterns.enumerated() { bytes[1 + 2 * i] = UInt8(h & 0xFF); bytes[2 + 2 * i] = UInt8(h >> 8) }
        for n in [patterns.count, patterns.count - 1, 15, 17, 1, 0] {
            var out = [Float](repeating: .nan, count: n)
            bytes.withUnsafeBytes { b in Codec.decode(.BF16, b.baseAddress! + 1, count: n, into: &out) }
            let first = out.indices.first { out[$0].bitPattern != UInt32(patterns[$0]) << 16 }
            XCTAssertNil(first, "n \(n): pattern \(first.map { patterns[$0] } ?? 0)")
        }
    }

    func testF16MatchesSwiftFloat16OnEveryPattern() {
        var src = (0...0xFFFF).map { UInt16($0) }
        var dec = [Float](repeating: 0, count: src.count)
        Codec.decode(.F16, &src, count: src.count, into: &dec)
        var back = [UInt16](repeating: 0, count: src.count)
        Codec.encode(dec, count: dec.count, as: .F16, into: &back)
        for i in 0..<src.count {
            let ref = Float(Float16(bitPattern: src[i]))
            if ref.isNaN { XCTAssertTrue(dec[i].isNaN); continue }
            XCTAssertEqual(dec[i].bitPattern, ref.bitPattern, "f16 \(src[i])")
            XCTAssertEqual(back[i], src[i], "round trip \(src[i])")
        }
    }

    func testF32ToF16RoundsLikeSwift() {
        var rng = SystemRandomNumberGenerator()
        var xs = (0..<100_000).map { _ in Float(bitPattern: UInt32.random(in: 0x3000_0000...0x4800_0000, using: &rng)) * (Bool.random() ? 1 : -1) }
        xs += [65504, 65519.99, 65520, 1e-8, 5.9604645e-08, 2.9802322e-08, 2.9802326e-08, .infinity]
        var out = [UInt16](repeating: 0, count: xs.count)
        Codec.encode(xs, count: xs.count, as: .F16, into: &out)
        for (x, h) in zip(xs, out) { XCTAssertEqual(h, Float16(x).bitPattern, "\(x)") }
    }

    func testFloat8RoundTripsEveryCodeAndSaturatesLikeMLDtypes() {
        for f in [Float8.e4m3, Float8.e5m2] {
            for b in 0...255 {
                let v = f.decode(UInt8(b))
                if v.isNaN { XCTAssertTrue(f.decode(f.encode(v)).isNaN); continue }
                XCTAssertEqual(f.encode(v), UInt8(b), "code \(b)")
            }
        }
        XCTAssertEqual(Float8.e4m3.decode(0x7E), 448)
        XCTAssertEqual(Float8.e4m3.encode(460), 0x7E)          // rounds down to 448
        XCTAssertTrue(Float8.e4m3.decode(Float8.e4m3.encode(470)).isNaN)  // past 464: no Inf in E4M3FN
        XCTAssertEqual(Float8.e5m2.encode(1e6), 0x7C)          // Inf
        XCTAssertEqual(Float8.e4m3.encode(0.001953125), 0x01)  // smallest subnormal 2^-9
        XCTAssertEqual(Float8.e4m3.encode(0.0009765625), 0x00) // half of it: ties to even -> 0
    }

    func testUnalignedSources() {
        var raw: [UInt8] = [0xAA, 0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0]  // f32 1.0 and -2.0 at offset 1
        var out = [Float](repeating: 0, count: 2)
        raw.withUnsafeBytes { Codec.decode(.F32, $0.baseAddress! + 1, count: 2, into: &out) }
        XCTAssertEqual(out, [1, -2])
        raw = [0xAA, 0x80, 0x3F, 0x00, 0xC0]
        raw.withUnsafeBytes { Codec.decode(.BF16, $0.baseAddress! + 1, count: 2, into: &out) }
        XCTAssertEqual(out, [1, -2])
    }

    func testIntegersDecodeExactlyToDouble() {
        var v: [Int64] = [-(1 << 53), 1 << 53, -1]
        var out = [Double](repeating: 0, count: 3)
        Codec.decode(.I64, &v, count: 3, into: &out)
        XCTAssertEqual(out, [-9007199254740992, 9007199254740992, -1])
    }
}
