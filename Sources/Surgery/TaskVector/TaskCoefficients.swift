#if canImport(Glibc)
import Glibc
#endif
import SafeTensors

/// aTLAS's anisotropic scaling ("Knowledge Composition using Task Vectors with Learned Anisotropic
/// Scaling", Zhang et al., NeurIPS 2024): one coefficient per (task vector, parameter block), so
/// θ_b = θ₀,b + Σ_t λ_{t,b} τ_{t,b}. Blocks are tensor-name globs (wtool's JSON) or, in aTLAS's own
/// layout, one parameter tensor each, in the order of a name list (the `.pt` coefficient tensors
/// carry no names).
public struct TaskCoefficients: Sendable {
    /// Block patterns (exact names for aTLAS's layout).
    public let blocks: [String]
    /// coefficients[t][b]; one column when the file gives one coefficient per task.
    public let values: [[Double]]
    public let file: String

    /// wtool's JSON: {"blocks": [globs], "coefficients": [[λ per block] per task]} ("coef" also
    /// accepted; without "blocks", "coefficients": [λ per task]); or a torch.save coefficient file
    /// (aTLAS: a [T, P] or [T] tensor, or a dict holding one) with `blockOrder` naming the P blocks.
    public init(path: String, blockOrder: String?) throws {
        file = path
        let head = try FileSystem.readAll(path).prefix(4)
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
            (blocks, values) = try TaskCoefficients.readTorch(path, blockOrder: blockOrder)
        } else {
            if blockOrder != nil { throw UsageError("--block-order goes with aTLAS's .pt coefficient files; a JSON file names its blocks") }
            (blocks, values) = try TaskCoefficients.readJSON(path)
        }
        guard values.allSatisfy({ $0.allSatisfy(\.isFinite) }) else { throw FormatError(file: path, "a coefficient is not a finite number") }
    }

    static func readJSON(_ path: String) throws -> ([String], [[Double]]) {
        let json: JSONValue
        do { json = try JSONParser.parse(try FileSystem.readAll(path)) } catch let e as JSONParseError {
            throw FormatError(file: path, "invalid JSON: \(e)")
        }
        guard let c = json["coefficients"] ?? json["coef"], let rows = c.arrayValue else {
            throw FormatError(file: path, "no \"coefficients\" array")
        }
        guard let blockList = json["blocks"] else {
            let per = try rows.map { v -> [Double] in
                guard let d = v.doubleValue else { throw FormatError(file: path, "without \"blocks\", \"coefficients\" is one number per task vector") }
                return [d]
            }
            return (["*"], per)
        }
        let blocks = try (blockList.arrayValue ?? []).map { v -> String in
            guard let s = v.stringValue else { throw FormatError(file: path, "\"blocks\" holds \(v.compact()), not a name or glob") }
            return s
        }
        guard !blocks.isEmpty else { throw FormatError(file: path, "\"blocks\" is empty") }
        let values = try rows.enumerated().map { t, row -> [Double] in
            guard let r = row.arrayValue, r.count == blocks.count else {
                throw FormatError(file: path, "coefficients row \(t) does not hold one number per block (\(blocks.count))")
            }
            return try r.map { v in
                guard let d = v.doubleValue else { throw FormatError(file: path, "coefficients row \(t) holds \(v.compact())") }
                return d
            }
        }
        return (blocks, values)
    }

    static func readTorch(_ path: String, blockOrder: String?) throws -> ([String], [[Double]]) {
        let archive = try TorchArchive(path: path, bareTensorName: "coefficients")
        guard archive.tensors.count == 1, let t = archive.tensors.first else {
            throw FormatError(file: path, "holds \(archive.tensors.count) tensors (\(archive.tensors.map(\.name).prefix(5).joined(separator: ", "))); a coefficient file holds one: save that one alone")
        }
        guard t.dtype.isFloatingPoint else { throw FormatError(file: path, tensor: t.name, "coefficients of type \(t.dtype.rawValue)") }
        let shape = t.shapeInts
        var flat = [Double](repeating: 0, count: t.count)
        flat.withUnsafeMutableBufferPointer { Codec.decode(t.dtype, archive.bytes(t).baseAddress!, count: t.count, into: $0.baseAddress!) }
        switch shape.count {
        case 1:
            if blockOrder != nil { throw UsageError("these coefficients are one per task vector ([\(shape[0])]): --block-order does not apply") }
            return (["*"], flat.map { [$0] })
        case 2:
            guard let blockOrder else {
                throw UsageError("aTLAS's [tasks, blocks] coefficients carry no tensor names: give --block-order FILE (the model's parameter names in order)")
            }
            let names = try TaskCoefficients.names(blockOrder)
            guard names.count == shape[1] else {
                throw FormatError(file: blockOrder, "names \(names.count) blocks, the coefficients have \(shape[1]) ([\(shape[0]), \(shape[1])])")
            }
            return (names, (0..<shape[0]).map { Array(flat[($0 * shape[1])..<(($0 + 1) * shape[1])]) })
        default:
            throw FormatError(file: path, "coefficients of shape \(shape): aTLAS x K partitions need the random masks of the training run, which are not saved")
        }
    }

    /// One name per line (blank lines and #-comments skipped), or a JSON array of names.
    static func names(_ path: String) throws -> [String] {
        let bytes = try FileSystem.readAll(path)
        if bytes.first(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x09 }) == UInt8(ascii: "[") {
            guard let list = (try? JSONParser.parse(bytes))?.arrayValue else { throw FormatError(file: path, "is not a JSON array of names") }
            return try list.map { v in
                guard let s = v.stringValue else { throw FormatError(file: path, "holds \(v.compact()), not a name") }
                return s
            }
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map { $0.trimmingWhitespace() }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }

    /// Checks, before any work, that there is one row per task vector, that every tensor of every
    /// task vector falls in exactly one block, and that every block holds a tensor; returns the
    /// block index of each tensor name.
    func resolve(taskTensors: [[String]]) throws -> [String: Int] {
        guard values.count == taskTensors.count else {
            throw FormatError(file: file, "has coefficients for \(values.count) task vector(s); \(taskTensors.count) are given")
        }
        var blockOf: [String: Int] = [:]
        var used = Set<Int>()
        for names in taskTensors {
            for name in names where blockOf[name] == nil {
                let hits = blocks.indices.filter { fnmatch(blocks[$0], name, 0) == 0 }
                guard hits.count == 1 else {
                    throw FormatError(file: file, tensor: name, hits.isEmpty ? "is in no block: every tensor of every task vector needs a coefficient"
                                      : "is in \(hits.count) blocks (\(hits.map { "'\(blocks[$0])'" }.joined(separator: ", "))): each tensor must be in one")
                }
                blockOf[name] = hits[0]
                used.insert(hits[0])
            }
        }
        if let unused = blocks.indices.first(where: { !used.contains($0) }) {
            throw FormatError(file: file, "block '\(blocks[unused])' matches no tensor of the task vectors: a coefficient for a tensor that does not exist")
        }
        return blockOf
    }
}
