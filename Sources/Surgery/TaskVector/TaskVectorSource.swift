import SafeTensors
import CZlib

/// Marks a checkpoint written by `task-vector extract`.
public enum TaskVectorMetadata {
    public static let kind = "wtool.kind"
    public static let kindValue = "task_vector"
    public static let base = "wtool.base"
    /// Compact JSON {tensor name: CRC-32 of the base tensor's bytes}.
    public static let baseChecksums = "wtool.base_checksums"
}

/// CRC-32 (zlib) of a tensor's bytes, as 8 hex digits: identifies the base a delta belongs to.
public func checksum(_ bytes: UnsafeRawBufferPointer) -> String {
    var crc: UInt = crc32(0, nil, 0)
    var off = 0
    while off < bytes.count {  // zlib takes 32-bit lengths
        let n = min(1 << 30, bytes.count - off)
        crc = crc32(crc, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self) + off, UInt32(n))
        off += n
    }
    let h = String(crc, radix: 16)
    return String(repeating: "0", count: max(0, 8 - h.count)) + h
}

/// A task vector as a command takes it: a checkpoint written by `extract`, or a fine-tuned model
/// whose delta from the base is computed on the fly (nothing is written).
public struct TaskVectorSource: Sendable {
    public enum Kind: String, Sendable { case auto, taskVector = "task-vector", model }

    public let checkpoint: Checkpoint
    /// true: values are deltas; false: a fine-tuned model (delta = value - base).
    public let isDelta: Bool
    public let recordedChecksums: [String: String]

    public init(path: String, kind: Kind) throws {
        checkpoint = try Checkpoint(path: path)
        let meta = Dictionary(checkpoint.metadata ?? [], uniquingKeysWith: { a, _ in a })
        let marked = meta[TaskVectorMetadata.kind] == TaskVectorMetadata.kindValue
        switch kind {
        case .auto: isDelta = marked
        case .taskVector: isDelta = true
        case .model: isDelta = false
        }
        var sums: [String: String] = [:]
        if let text = meta[TaskVectorMetadata.baseChecksums], let json = try? JSONParser.parse(text), let obj = json.objectValue {
            for (k, v) in obj { if let s = v.stringValue { sums[k] = s } }
        }
        recordedChecksums = sums
    }

    /// The delta for one tensor in f32 (f64 subtraction when computed from a fine-tune).
    public func delta(_ name: String, base: [Float]?) -> [Float]? {
        guard let e = checkpoint.entry(name), e.info.dtype.isFloatingPoint else { return nil }
        let v = decodeFloats(checkpoint, e)
        guard !isDelta, let base else { return v }
        return zip(v, base).map { Float(Double($0) - Double($1)) }
    }
}
