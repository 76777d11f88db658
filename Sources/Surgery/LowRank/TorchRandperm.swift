/// torch.randperm(n, generator=torch.Generator().manual_seed(seed)) on the CPU, bit for bit,
/// without torch: what PEFT's FourierFT draws its frequency locations from. The generator is
/// MT19937 seeded with the standard 32-bit init on seed mod 2^32 (at::mt19937); aten's
/// randperm_cpu shuffles with z = next32() mod (n - i) for n below (2^32 - 1) / 20, and with the
/// inside-out shuffle on 64-bit draws above.
public enum TorchRandperm {
    /// MT19937 (Matsumoto & Nishimura), the generator behind torch's CPU default.
    struct MT19937 {
        var state = [UInt32](repeating: 0, count: 624)
        var index = 624

        init(seed: UInt32) {
            state[0] = seed
            for i in 1..<624 { state[i] = 1_812_433_253 &* (state[i - 1] ^ (state[i - 1] >> 30)) &+ UInt32(i) }
        }

        mutating func next() -> UInt32 {
            if index >= 624 {
                for i in 0..<624 {
                    let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
                    state[i] = state[(i + 397) % 624] ^ (y >> 1) ^ (y & 1 == 0 ? 0 : 0x9908_B0DF)
                }
                index = 0
            }
            var y = state[index]
            index += 1
            y ^= y >> 11
            y ^= (y << 7) & 0x9D2C_5680
            y ^= (y << 15) & 0xEFC6_0000
            y ^= y >> 18
            return y
        }
    }

    /// randperm_cpu's switch between its two shuffles.
    static let smallLimit = Int((UInt64(UInt32.max)) / 20)

    /// The first `count` entries of the permutation.
    public static func prefix(n: Int, count: Int, seed: Int64) -> [Int] {
        var mt = MT19937(seed: UInt32(truncatingIfNeeded: seed))
        let k = min(count, n)
        if n < smallLimit {
            // Fisher-Yates from the front: position i is final after step i, so only the entries
            // displaced so far need remembering.
            var displaced: [Int: Int] = [:]
            var out: [Int] = []
            out.reserveCapacity(k)
            for i in 0..<k {
                let z = i < n - 1 ? Int(mt.next() % UInt32(n - i)) : 0
                let j = i + z
                let vi = displaced[i] ?? i, vj = displaced[j] ?? j
                displaced[j] = vi
                out.append(vj)
            }
            return out
        }
        // Inside-out shuffle with 64-bit draws (needs the whole array).
        var r = [UInt32](repeating: 0, count: n)
        for i in 0..<n {
            let hi = UInt64(mt.next()), lo = UInt64(mt.next())
            let z = Int(((hi << 32) | lo) % UInt64(i + 1))
            r[i] = r[z]
            r[z] = UInt32(i)
        }
        return r.prefix(k).map(Int.init)
    }
}
