/// The one random source of wtool: xoshiro256** seeded from (seed, stream name), where the stream
/// is a tensor name (plus an optional block number). Results therefore depend only on `--seed`
/// and the tensor, never on thread count or processing order.
public struct SeededRNG: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64, stream: String, block: UInt64 = 0) {
        // FNV-1a of the stream name, mixed with the seed and block through SplitMix64.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in stream.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        var x = seed ^ SeededRNG.mix(h) ^ SeededRNG.mix(block &+ 0x9E37_79B9_7F4A_7C15)
        func next() -> UInt64 { x &+= 0x9E37_79B9_7F4A_7C15; return SeededRNG.mix(x) }
        s = (next(), next(), next(), next())
    }

    static func mix(_ v: UInt64) -> UInt64 {
        var z = v
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }

    /// The state as four words, for C kernels that draw the same sequence (CMerge's DARE and
    /// DELLA): `body` may advance it in place.
    public mutating func withState<R>(_ body: (UnsafeMutablePointer<UInt64>) throws -> R) rethrows -> R {
        try withUnsafeMutableBytes(of: &s) { try body($0.baseAddress!.assumingMemoryBound(to: UInt64.self)) }
    }

    /// Uniform in [0, 1) with 24 bits (every value an exact f32).
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Uniform in [0, 1) with 53 bits.
    public mutating func nextUnitDouble() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// A uniformly random permutation of 0..<n (Fisher-Yates, our own so it never changes with the
    /// standard library's shuffle).
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n > 1 { for i in stride(from: n - 1, to: 0, by: -1) { p.swapAt(i, Int(next() % UInt64(i + 1))) } }
        return p
    }

    /// Standard normal (Box-Muller, both values of a pair are not kept: simplicity over speed).
    public mutating func nextGaussian() -> Float {
        let u1 = max(nextUnitDouble(), 0x1p-53)
        let u2 = nextUnitDouble()
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) private func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#elseif canImport(Darwin)
import Darwin
@inline(__always) private func _log(_ x: Double) -> Double { Darwin.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif
