import SafeTensors

/// A llama.cpp importance matrix, as llama-quantize feeds it to ggml's quantizers: per tensor (by
/// its GGUF name) one weight per input column, the mean of the squared activations. Read from the
/// GGUF format (`<name>.in_sum2` F32 [ne0, n_mat] and `<name>.counts` F32 [n_mat]: value =
/// in_sum2 / counts, 1 where counts is 0) or the legacy `.dat` (int32 n; per entry int32 name
/// length, name, int32 ncall, int32 nval, f32[nval], divided by ncall when positive).
public struct ImportanceMatrix: Sendable {
    public let path: String
    let entries: [String: [Float]]

    public init(path: String) throws {
        self.path = path
        entries = GGUFFile.isGGUF(path) ? try ImportanceMatrix.readGGUF(path) : try ImportanceMatrix.readLegacy(path)
        for (name, v) in entries {
            if let bad = v.firstIndex(where: { !$0.isFinite }) { throw FormatError(file: path, tensor: name, "entry \(bad) is \(v[bad]), not finite") }
        }
    }

    public var count: Int { entries.count }

    /// The column weights for a tensor with rows of `columns` values; nil when the file has none
    /// (llama-quantize then quantizes without). A size mismatch is an error, except for
    /// token_embd, whose entry llama-quantize ignores.
    public func weights(for ggufName: String, columns: Int) throws -> [Float]? {
        guard let v = entries[ggufName] else { return nil }
        guard v.count == columns else {
            if ggufName == "token_embd.weight" { return nil }
            throw FormatError(file: path, tensor: ggufName, "has \(v.count) values, the tensor has \(columns) columns (per-expert matrices are not supported)")
        }
        return v
    }

    static func readGGUF(_ path: String) throws -> [String: [Float]] {
        let g = try GGUFFile(path: path)
        var out: [String: [Float]] = [:]
        for t in g.tensors where t.name.hasSuffix(".in_sum2") {
            let name = String(t.name.dropLast(".in_sum2".count))
            guard let c = g.tensor(name + ".counts") else { throw FormatError(file: path, tensor: t.name, "has no \(name).counts beside it") }
            let sums = try g.floats(t), counts = try g.floats(c)
            let ne0 = Int(clamping: t.dims.first ?? 0)
            guard counts.count == 1, sums.count == ne0 else {
                throw FormatError(file: path, tensor: t.name, "holds \(counts.count) matrices (per-expert importance is not supported)")
            }
            out[name] = counts[0] == 0 ? Array(repeating: 1, count: ne0) : sums.map { $0 / counts[0] }
        }
        guard !out.isEmpty else { throw FormatError(file: path, "is a GGUF without imatrix entries (<name>.in_sum2 and <name>.counts)") }
        return out
    }

    static func readLegacy(_ path: String) throws -> [String: [Float]] {
        let bytes = try FileSystem.readAll(path)
        var at = 0
        func int32() throws -> Int {
            guard at + 4 <= bytes.count else { throw FormatError(file: path, "is truncated at byte \(at) (not an imatrix .dat or GGUF file)") }
            defer { at += 4 }
            return Int(Int32(littleEndian: bytes[at..<at + 4].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }))
        }
        let n = try int32()
        guard n > 0, n < 1 << 20 else { throw FormatError(file: path, "declares \(n) entries: not an imatrix .dat file") }
        var out: [String: [Float]] = [:]
        for _ in 0..<n {
            let len = try int32()
            guard len > 0, len < 4096, at + len <= bytes.count, let name = String(validating: bytes[at..<at + len], as: UTF8.self) else {
                throw FormatError(file: path, "has a malformed entry name at byte \(at)")
            }
            at += len
            let ncall = try int32(), nval = try int32()
            guard nval > 0, at + 4 * nval <= bytes.count else { throw FormatError(file: path, tensor: name, "declares \(nval) values past the end of the file") }
            var v = [Float](repeating: 0, count: nval)
            v.withUnsafeMutableBytes { dst in bytes.withUnsafeBytes { dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[at..<at + 4 * nval])) } }
            at += 4 * nval
            if ncall > 0 { for i in 0..<nval { v[i] /= Float(ncall) } }
            out[name] = v
        }
        return out
    }
}
