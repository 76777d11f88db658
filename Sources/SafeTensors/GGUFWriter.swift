#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSystem

/// A tensor a GGUF file will hold, declared up front so the header can be written first.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// numpy / safetensors order (the file stores it reversed, fastest dimension first).
    public let shape: [UInt64]
    /// `enum ggml_type` value.
    public let type: UInt32
    public let byteCount: Int
    public init(name: String, shape: [UInt64], type: UInt32, byteCount: Int) {
        self.name = name; self.shape = shape; self.type = type; self.byteCount = byteCount
    }
}

/// Streams a GGUF v3 file: header, metadata and tensor table first, then each tensor's data at a
/// precomputed offset (any order, any thread, `pwrite`). Laid out the way ggml's loader insists:
/// data contiguous in table order, every tensor padded to the alignment. The file is written under a
/// temporary name beside the target; `commit` fsyncs and renames, `abort` removes it.
public final class GGUFWriter: @unchecked Sendable {
    public let path: String
    public let tensors: [GGUFTensorInfo]
    private let tmpPath: String
    private let fd: Int32
    private var offsets: [Int] = []
    private var written: [Int]
    private var behind = WriteBehind()
    private let lock = Mutex()
    private var finished = false

    /// ggml's limits: names shorter than 64 bytes, at most 4 dimensions.
    public static let maxNameBytes = 63
    public static let maxDims = 4

    public init(path: String, metadata: [(String, GGUFValue)], tensors: [GGUFTensorInfo], alignment: Int = 32) throws {
        self.path = path
        self.tensors = tensors
        written = Array(repeating: 0, count: tensors.count)
        var seen = Set<String>()
        for t in tensors {
            guard t.name.utf8.count <= GGUFWriter.maxNameBytes else {
                throw FormatError(file: path, tensor: t.name, "name is \(t.name.utf8.count) bytes; GGUF readers (ggml) accept at most \(GGUFWriter.maxNameBytes)")
            }
            guard t.shape.count <= GGUFWriter.maxDims else {
                throw FormatError(file: path, tensor: t.name, "has \(t.shape.count) dimensions; GGUF allows at most \(GGUFWriter.maxDims)")
            }
            guard seen.insert(t.name).inserted else { throw FormatError(file: path, tensor: t.name, "written twice") }
        }
        var keys = Set<String>()
        for (k, _) in metadata where !keys.insert(k).inserted { throw FormatError(file: path, "metadata key '\(k)' given twice") }

        var header: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { header.append(contentsOf: $0) } }
        header.append(contentsOf: "GGUF".utf8)
        put(UInt32(3))
        put(UInt64(tensors.count))
        put(UInt64(metadata.count))
        for (k, v) in metadata {
            GGUFValue.string(k).encode(into: &header)
            put(v.typeID)
            v.encode(into: &header)
        }
        var offset = 0
        for t in tensors {
            GGUFValue.string(t.name).encode(into: &header)
            put(UInt32(t.shape.count))
            for d in t.shape.reversed() { put(d) }
            put(t.type)
            put(UInt64(offset))
            offsets.append(offset)
            offset += (t.byteCount + alignment - 1) / alignment * alignment
        }
        let dataStart = (header.count + alignment - 1) / alignment * alignment
        offsets = offsets.map { $0 + dataStart }
        let size = dataStart + offset

        var tmpl = Array(OutputTransaction.temporaryTemplate(for: path).utf8CString)
        let fd = mkstemp(&tmpl)
        guard fd >= 0 else { throw FormatError(file: path, "cannot create a temporary file beside it: \(String(cString: strerror(errno)))") }
        self.fd = fd
        tmpPath = String(decoding: tmpl.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        _ = wt_register_temporary(tmpPath)
        do {
            fchmod(fd, 0o644)
            guard ftruncate(fd, off_t(size)) == 0 else {
                throw FormatError(file: path, "cannot size the output (\(size) bytes): \(String(cString: strerror(errno)))")
            }
            try header.withUnsafeBytes { try CheckpointWriter.pwriteAll(fd, $0, at: 0, path: path) }
        } catch {
            abort()
            throw error
        }
    }

    /// Writes `bytes` into tensor `index` starting `offset` bytes in. Thread-safe for disjoint ranges.
    public func write(tensor index: Int, at offset: Int = 0, _ bytes: UnsafeRawBufferPointer) throws {
        precondition(offset >= 0 && offset + bytes.count <= tensors[index].byteCount, "GGUFWriter: write past the end of '\(tensors[index].name)'")
        guard bytes.count > 0 else { return }
        try CheckpointWriter.pwriteAll(fd, bytes, at: offsets[index] + offset, path: path)
        let due = lock.withLock { () -> Bool in
            written[index] += bytes.count
            return behind.add(bytes.count)
        }
        if due { WriteBehind.request(fd) }
    }

    public func commit() throws {
        for (i, t) in tensors.enumerated() where written[i] != t.byteCount {
            abort()
            throw FormatError(file: path, tensor: t.name, "internal error: \(written[i]) of \(t.byteCount) bytes were written")
        }
        guard fsync(fd) == 0 else { abort(); throw FormatError(file: path, "fsync failed: \(String(cString: strerror(errno)))") }
        close(fd)
        guard rename(tmpPath, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(tmpPath)
            wt_unregister_temporary(tmpPath)
            finished = true
            throw FormatError(file: path, "cannot rename into place: \(why)")
        }
        wt_unregister_temporary(tmpPath)
        finished = true
        syncDirectory(FileSystem.dirname(path))
    }

    public func abort() {
        guard !finished else { return }
        close(fd)
        unlink(tmpPath)
        wt_unregister_temporary(tmpPath)
        finished = true
    }

    deinit { abort() }
}
