import Linalg
import SafeTensors

/// `--solve-lap FILE`: solves (maximising) every square F64 matrix of a safetensors file with
/// wtool's assignment solver: how the interop suite and `make bench` compare it with scipy.
public enum LAPDiagnostic {
    public static func solve(file path: String, threads: Int = 1) throws -> [JSONValue] {
        let c = try Checkpoint(path: path)
        return try c.entries.map { e in
            let s = e.info.shapeInts
            guard e.info.dtype == .F64, s.count == 2, s[0] == s[1] else {
                throw FormatError(file: path, tensor: e.name, "needs a square F64 matrix, not \(e.info.dtype.rawValue) \(s)")
            }
            let cost = decodeDoubles(c, e)
            let t0 = monotonicSeconds()
            let col: [Int]
            do { col = try LinearAssignment.solve(cost, n: s[0], maximize: true, threads: threads) } catch {
                throw FormatError(file: path, tensor: e.name, "\(error)")
            }
            let seconds = monotonicSeconds() - t0
            let objective = cost.withUnsafeBufferPointer { LinearAssignment.objective($0, n: s[0], col) }
            return .object([("name", .string(e.name)), ("n", .int(s[0])), ("objective", .double(objective)),
                            ("assignment", .array(col.map { .int($0) })), ("seconds", .double(seconds))])
        }
    }
}
