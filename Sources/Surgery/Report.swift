import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

public let wtoolVersion = "0.1.0"

/// The JSON report every command writes (schema in man/wtool.1, "REPORT"): keys sorted, floats
/// finite (a non-finite metric is written as null next to a `<name>_nonfinite` string).
public struct RunReport: Sendable {
    public var command: [String]
    public var inputs: [JSONValue] = []
    public var output: JSONValue = .null
    public var parameters: [(String, JSONValue)] = []
    public var tensors: [JSONValue] = []
    public var summary: [(String, JSONValue)] = []
    public var timing: [(String, JSONValue)] = []
    public var warnings: [String] = []

    public init(command: [String]) { self.command = command }

    public var json: JSONValue {
        .object([
            ("tool", .string("wtool")),
            ("version", .string(wtoolVersion)),
            ("command", .array(command.map { .string($0) })),
            ("inputs", .array(inputs)),
            ("output", output),
            ("parameters", .object(parameters)),
            ("tensors", .array(tensors)),
            ("summary", .object(summary)),
            ("timing", .object(timing)),
            ("warnings", .array(warnings.map { .string($0) })),
        ])
    }

    public func write(to path: String) throws {
        try AtomicFile.write(Array((json.pretty() + "\n").utf8), to: path)
    }

    /// Describes an input checkpoint.
    public static func describe(_ c: Checkpoint) -> JSONValue {
        .object([
            ("path", .string(c.path)),
            ("files", .array(c.files.map { .string($0.path) })),
            ("tensors", .int(c.entries.count)),
            ("bytes", .uint(c.totalBytes)),
        ])
    }
}

/// A named metric; non-finite values become null plus a `<name>_nonfinite` marker.
public func metric(_ name: String, _ v: Double) -> [(String, JSONValue)] {
    if v.isFinite { return [(name, .double(v))] }
    return [(name, .null), (name + "_nonfinite", .string(v.isNaN ? "nan" : (v > 0 ? "inf" : "-inf")))]
}

/// Monotonic wall-clock seconds.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Phases timed for the report's `timing` object.
public struct PhaseTimer: Sendable {
    private var last = monotonicSeconds()
    public private(set) var phases: [(String, JSONValue)] = []
    public init() {}
    public mutating func lap(_ name: String) {
        let now = monotonicSeconds()
        phases.append((name + "_s", .double(((now - last) * 1e6).rounded() / 1e6)))
        last = now
    }
}
