/// Sizes as users write them for `--shard-size`: decimal units like Hugging Face's
/// (`500MB` = 500 * 10^6, `5GB`), binary ones when asked (`2GiB`), or a plain byte count.
public enum ByteSize {
    public static func parse(_ text: String) -> UInt64? {
        let t = text.trimmingCharacters(in: " ").uppercased()
        let units: [(String, Double)] = [
            ("TIB", 1_099_511_627_776), ("GIB", 1_073_741_824), ("MIB", 1_048_576), ("KIB", 1024),
            ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1),
        ]
        for (u, f) in units where t.hasSuffix(u) {
            guard let v = Double(String(t.dropLast(u.count)).trimmingCharacters(in: " ")), v > 0, v.isFinite else { return nil }
            let bytes = (v * f).rounded()
            return bytes >= 1 && bytes < 1.8e19 ? UInt64(bytes) : nil
        }
        guard let v = UInt64(t), v > 0 else { return nil }
        return v
    }

    /// A human-readable decimal size (`1.23 GB`).
    public static func describe(_ bytes: UInt64) -> String {
        let d = Double(bytes)
        for (u, f) in [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)] where d >= f {
            return formatFixed(d / f, 2) + " " + u
        }
        return "\(bytes) B"
    }
}

extension String {
    func trimmingCharacters(in ch: Character) -> String {
        var s = Substring(self)
        while s.first == ch { s.removeFirst() }
        while s.last == ch { s.removeLast() }
        return String(s)
    }
}

/// Fixed-point formatting without Foundation.
public func formatFixed(_ v: Double, _ digits: Int) -> String {
    guard v.isFinite else { return "\(v)" }
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let r = (abs(v) * p).rounded()
    let ip = Int64(r / p)
    let fp = Int64(r - Double(ip) * p)
    var f = String(fp)
    while f.count < digits { f = "0" + f }
    return (v < 0 && r != 0 ? "-" : "") + String(ip) + (digits > 0 ? "." + f : "")
}
