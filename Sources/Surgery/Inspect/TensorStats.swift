import SafeTensors

/// Summary statistics of one tensor, computed in f64 over its finite values (NaN and Inf are
/// counted, not folded into the moments).
public struct TensorStats: Sendable, Equatable {
    public var count = 0           // all elements
    public var finite = 0
    public var nan = 0
    public var inf = 0
    public var zeros = 0
    public var min = Double.infinity
    public var max = -Double.infinity
    public var mean = 0.0
    var m2 = 0.0                   // sum of squared deviations (Chan et al.'s parallel update)
    public var sumSquares = 0.0

    public var std: Double { finite > 0 ? (m2 / Double(finite)).squareRoot() : .nan }
    public var l2: Double { sumSquares.squareRoot() }
    public var zeroFraction: Double { count > 0 ? Double(zeros) / Double(count) : 0 }

    public init() {}

    /// Statistics of `count` elements of `dtype` at `bytes`, decoded block by block.
    public init(dtype: DType, bytes: UnsafeRawPointer?, count: Int) {
        guard count > 0, let bytes, dtype.isNumeric else { self.count = count; return }
        let block = 1 << 16
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: Swift.min(block, count))
        defer { buf.deallocate() }
        var i = 0
        while i < count {
            let n = Swift.min(block, count - i)
            Codec.decode(dtype, bytes + i * dtype.size!, count: n, into: buf)
            add(UnsafeBufferPointer(start: buf, count: n))
            i += n
        }
    }

    mutating func add(_ v: UnsafeBufferPointer<Double>) {
        var b = TensorStats()
        b.count = v.count
        // Compensated (Neumaier) sums: checkpoints hold outliers (1e30 next to 1e-3) that a
        // plain f64 sum would let swallow everything else.
        var s = CompensatedSum(), sq = CompensatedSum()
        for x in v {
            if x.isNaN { b.nan += 1; continue }
            if x.isInfinite { b.inf += 1; continue }
            if x == 0 { b.zeros += 1 }
            b.finite += 1
            s.add(x)
            sq.add(x * x)
            if x < b.min { b.min = x }
            if x > b.max { b.max = x }
        }
        if b.finite > 0 {
            b.mean = s.value / Double(b.finite)
            var dev = CompensatedSum()
            for x in v where x.isFinite { dev.add((x - b.mean) * (x - b.mean)) }
            b.m2 = dev.value
        }
        b.sumSquares = sq.value
        merge(b)
    }

    mutating func merge(_ o: TensorStats) {
        let n = finite + o.finite
        if n > 0 {
            let delta = o.mean - mean
            m2 += o.m2 + delta * delta * Double(finite) * Double(o.finite) / Double(n)
            mean += delta * Double(o.finite) / Double(n)
        }
        count += o.count; finite = n; nan += o.nan; inf += o.inf; zeros += o.zeros
        sumSquares += o.sumSquares
        min = Swift.min(min, o.min); max = Swift.max(max, o.max)
    }

    public var json: [(String, JSONValue)] {
        let any = finite > 0
        return metric("min", any ? min : .nan) + metric("max", any ? max : .nan) + metric("mean", any ? mean : .nan)
            + metric("std", std) + metric("l2_norm", l2)
            + [("nan_count", .int(nan)), ("inf_count", .int(inf)), ("zero_fraction", .double(zeroFraction))]
    }
}

/// Neumaier's compensated summation.
struct CompensatedSum {
    private var sum = 0.0
    private var c = 0.0
    mutating func add(_ x: Double) {
        let t = sum + x
        c += abs(sum) >= abs(x) ? (sum - t) + x : (x - t) + sum
        sum = t
    }
    var value: Double { sum + c }
}
