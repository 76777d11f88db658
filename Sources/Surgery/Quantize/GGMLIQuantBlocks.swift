/// Decoders of the ggml block types wtool reads but does not write: the i-quants (IQ1_S, IQ1_M,
/// IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ4_NL, IQ4_XS) and the FP4 types (MXFP4, NVFP4), as
/// ggml's `dequantize_row_*` and gguf-py's `dequantize` compute them: the same f32 products in the
/// same order, so values match bit for bit. Lookup grids come from `IQTables` (generated data).
/// Every function takes whole blocks.
enum GGMLIQuantBlocks {
    static let qk = 256

    /// A grid unpacked to floats, row-major (`rows x width`).
    static func unpack(_ g: IQTables.Grid) -> [Float] {
        let hexDigits = Array(g.hex.utf8).filter { $0 != 0x0A }
        let perByte = 8 / g.bits, step = 8 / perByte, mask = (1 << g.bits) - 1
        var out: [Float] = []
        out.reserveCapacity(g.rows * g.width)
        func nibble(_ c: UInt8) -> Int { Int(c > 0x40 ? (c + 9) & 0x0F : c & 0x0F) }
        for i in stride(from: 0, to: hexDigits.count - 1, by: 2) {
            let byte = nibble(hexDigits[i]) << 4 | nibble(hexDigits[i + 1])
            for k in 0..<perByte { out.append(g.values[(byte >> (k * step)) & mask]) }
        }
        return out
    }

    static let iq2xxs = unpack(IQTables.iq2xxs)
    static let iq2xs = unpack(IQTables.iq2xs)
    static let iq2s = unpack(IQTables.iq2s)
    static let iq3xxs = unpack(IQTables.iq3xxs)
    static let iq3s = unpack(IQTables.iq3s)
    static let iq1s = unpack(IQTables.iq1s)
    /// kvalues_iq4nl: the 16 non-linear levels of IQ4_NL / IQ4_XS.
    static let iq4Levels: [Float] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
    /// kvalues_mxfp4: E2M1 values doubled (the scale is halved to match).
    static let fp4Levels: [Float] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]

    @inline(__always) static func u16(_ p: UnsafeRawPointer, _ o: Int) -> Int { Int(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
    @inline(__always) static func u32(_ p: UnsafeRawPointer, _ o: Int) -> UInt32 { UInt32(littleEndian: p.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    @inline(__always) static func byte(_ p: UnsafeRawPointer, _ o: Int) -> Int { Int(p.load(fromByteOffset: o, as: UInt8.self)) }
    @inline(__always) static func sign(_ bits: Int, _ j: Int) -> Float { (bits >> j) & 1 == 0 ? 1 : -1 }

    /// 8 values of grid row `row` times `scale`, signs from the bits of `signs`.
    @inline(__always) static func put8(_ grid: [Float], _ row: Int, _ scale: Float, _ signs: Int, _ y: UnsafeMutablePointer<Float>) {
        for j in 0..<8 { y[j] = scale * grid[row * 8 + j] * sign(signs, j) }
    }

    // MARK: IQ2_XXS: d:f16, then per 32 values two u32: four grid rows (bytes), then 4 x 7-bit sign ids + 4-bit scale

    static func decodeIQ2_XXS(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 66, d = loadHalf(s)
            for ib in 0..<8 {
                let grids = u32(s, 2 + ib * 8), aux = u32(s, 6 + ib * 8)
                let db = d * (0.5 + Float(aux >> 28)) * 0.25
                for l in 0..<4 {
                    let row = Int((grids >> (8 * UInt32(l))) & 0xFF)
                    put8(iq2xxs, row, db, Int(IQTables.signs[Int((aux >> (7 * UInt32(l))) & 127)]), y + b * qk + ib * 32 + l * 8)
                }
            }
        }
    }

    // MARK: IQ2_XS: d:f16, 32 u16 (9-bit grid row + 7-bit sign id), 16 4-bit scales (one per 16 values)

    static func decodeIQ2_XS(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 74, d = loadHalf(s)
            for k in 0..<32 {
                let q = u16(s, 2 + 2 * k)
                let sc = (byte(s, 66 + k / 4) >> (4 * ((k / 2) % 2))) & 0x0F
                let db = d * (0.5 + Float(sc)) * 0.25
                put8(iq2xs, q & 511, db, Int(IQTables.signs[q >> 9]), y + b * qk + k * 8)
            }
        }
    }

    // MARK: IQ2_S: d:f16, 32 grid-row bytes, 32 sign bytes, 8 bytes of 2-bit high row bits, 8 scale bytes

    static func decodeIQ2_S(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 82, d = loadHalf(s)
            for k in 0..<32 {
                let row = byte(s, 2 + k) | ((byte(s, 66 + k / 4) >> (2 * (k % 4))) & 3) << 8
                let sc = (byte(s, 74 + k / 4) >> (4 * ((k / 2) % 2))) & 0x0F
                let db = d * (0.5 + Float(sc)) * 0.25
                put8(iq2s, row, db, byte(s, 34 + k), y + b * qk + k * 8)
            }
        }
    }

    // MARK: IQ3_XXS: d:f16, 64 grid-row bytes (4 values each), 8 u32: 4 x 7-bit sign ids + 4-bit scale

    static func decodeIQ3_XXS(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 98, d = loadHalf(s)
            for ib in 0..<8 {
                let aux = u32(s, 66 + 4 * ib)
                let db = d * (0.5 + Float(aux >> 28)) * 0.5
                for l in 0..<4 {
                    let signs = Int(IQTables.signs[Int((aux >> (7 * UInt32(l))) & 127)])
                    let o = y + b * qk + ib * 32 + l * 8
                    for j in 0..<8 {
                        let row = byte(s, 2 + ib * 8 + l * 2 + j / 4)
                        o[j] = db * iq3xxs[row * 4 + j % 4] * sign(signs, j)
                    }
                }
            }
        }
    }

    // MARK: IQ3_S: d:f16, 64 grid-row bytes, 8 bytes of high row bits, 32 sign bytes, 4 scale bytes

    static func decodeIQ3_S(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 110, d = loadHalf(s)
            for v in 0..<qk {
                let g = v / 4
                let row = byte(s, 2 + g) | ((byte(s, 66 + g / 8) >> (g % 8)) & 1) << 8
                let sc = (byte(s, 106 + v / 64) >> (4 * ((v / 32) % 2))) & 0x0F
                let db = d * Float(1 + 2 * sc)
                y[b * qk + v] = db * iq3s[row * 4 + v % 4] * sign(byte(s, 74 + v / 8), v % 8)
            }
        }
    }

    // MARK: IQ1_S: d:f16, 32 grid-row bytes, 8 u16: 4 x 3-bit high row bits, 3-bit scale, delta sign

    static func decodeIQ1_S(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 50, d = loadHalf(s)
            for ib in 0..<8 {
                let qh = u16(s, 34 + 2 * ib)
                let dl = d * Float(2 * ((qh >> 12) & 7) + 1)
                let delta: Float = qh & 0x8000 == 0 ? 0.125 : -0.125
                for l in 0..<4 {
                    let row = byte(s, 2 + ib * 4 + l) | ((qh >> (3 * l)) & 7) << 8
                    let o = y + b * qk + ib * 32 + l * 8
                    for j in 0..<8 { o[j] = dl * (iq1s[row * 8 + j] + delta) }
                }
            }
        }
    }

    // MARK: IQ1_M: 32 grid-row bytes, 16 bytes of nibbles (3 high row bits + delta sign), 4 u16 of
    // 3-bit scales whose top nibbles together hold d (f16)

    static func decodeIQ1_M(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 56
            let sc = (0..<4).map { u16(s, 48 + 2 * $0) }
            let bits = (sc[0] & 0xF000) >> 12 | (sc[1] & 0xF000) >> 8 | (sc[2] & 0xF000) >> 4 | (sc[3] & 0xF000)
            let d = withUnsafeBytes(of: UInt16(bits).littleEndian) { loadHalf($0.baseAddress!) }
            for k in 0..<32 {
                let scale = (sc[k / 8] >> (3 * ((k / 2) % 4))) & 7
                let dl = d * Float(2 * scale + 1)
                let nib = (byte(s, 32 + k / 2) >> (4 * (k % 2))) & 0x0F
                let row = byte(s, k) | (nib & 7) << 8
                let delta: Float = nib & 8 == 0 ? 0.125 : -0.125
                let o = y + b * qk + k * 8
                for j in 0..<8 { o[j] = dl * (iq1s[row * 8 + j] + delta) }
            }
        }
    }

    // MARK: IQ4_NL (blocks of 32): d:f16, 16 bytes: low nibbles are values 0-15, high 16-31

    static func decodeIQ4_NL(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / 32) {
            let s = src + b * 18, d = loadHalf(s), o = y + b * 32
            for j in 0..<16 {
                let q = byte(s, 2 + j)
                o[j] = d * iq4Levels[q & 0x0F]
                o[j + 16] = d * iq4Levels[q >> 4]
            }
        }
    }

    // MARK: IQ4_XS: d:f16, u16 of 2-bit scale highs, 4 bytes of 4-bit scale lows, 128 bytes of nibbles

    static func decodeIQ4_XS(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / qk) {
            let s = src + b * 136, d = loadHalf(s), high = u16(s, 2)
            for ib in 0..<8 {
                let low = (byte(s, 4 + ib / 2) >> (4 * (ib % 2))) & 0x0F
                let scale = (low | ((high >> (2 * ib)) & 3) << 4) - 32
                let dl = d * Float(scale)
                let o = y + b * qk + ib * 32
                for j in 0..<16 {
                    let q = byte(s, 8 + ib * 16 + j)
                    o[j] = dl * iq4Levels[q & 0x0F]
                    o[j + 16] = dl * iq4Levels[q >> 4]
                }
            }
        }
    }

    // MARK: MXFP4 (blocks of 32): e8m0 exponent byte, 16 bytes of E2M1 nibbles (low: 0-15, high: 16-31)

    static func decodeMXFP4(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / 32) {
            let s = src + b * 17, e = UInt32(byte(s, 0)), o = y + b * 32
            // ggml_e8m0_to_fp32_half: 2^(e-127) / 2, subnormal for e < 2
            let d = Float(bitPattern: e < 2 ? 0x0020_0000 << e : (e - 1) << 23)
            for j in 0..<16 {
                let q = byte(s, 1 + j)
                o[j] = d * fp4Levels[q & 0x0F]
                o[j + 16] = d * fp4Levels[q >> 4]
            }
        }
    }

    // MARK: NVFP4 (blocks of 64): four UE4M3 scales (one per 16 values), 32 bytes of E2M1 nibbles

    static func decodeNVFP4(_ src: UnsafeRawPointer, _ n: Int, _ y: UnsafeMutablePointer<Float>) {
        for b in 0..<(n / 64) {
            let s = src + b * 36
            for sub in 0..<4 {
                let x = byte(s, sub), exp = (x >> 3) & 0x0F, man = Float(x & 7)
                let raw: Float = exp == 0 ? man * 0x1p-9 : (1 + man / 8) * Float(sign: .plus, exponent: exp - 7, significand: 1)
                let d: Float = x == 0 || x == 0x7F ? 0 : raw * 0.5
                let o = y + b * 64 + sub * 16
                for j in 0..<8 {
                    let q = byte(s, 4 + sub * 8 + j)
                    o[j] = d * fp4Levels[q & 0x0F]
                    o[j + 8] = d * fp4Levels[q >> 4]
                }
            }
        }
    }
}
