/// A `torch.save` checkpoint (`pytorch_model.bin`, PyTorch >= 1.6 zip format), read without
/// executing anything: `data.pkl` is evaluated by `SafePickle`, and each tensor's bytes are served
/// straight from the mapped `data/<key>` record (torch aligns them to 64 bytes and never
/// compresses them). Views that are not C-contiguous (a transposed or strided tensor, a
/// broadcast) are copied out once, at open.
public final class TorchArchive: TensorFile, @unchecked Sendable {
    public let tensors: [TensorInfo]
    /// Non-fatal findings (entries that are not tensors, a nested state dict that was unwrapped).
    public let warnings: [String]
    public var path: String { file.path }
    public var metadata: [(String, String)]? { nil }
    private let file: MappedFile
    /// Copies of non-contiguous views, by tensor name.
    private let copies: [String: UnsafeMutableRawBufferPointer]

    /// What the first bytes of a file say it is, for the formats torch has written.
    public enum Kind { case zip, legacyStream, legacyTar, other }

    public static func kind(of b: UnsafeRawBufferPointer) -> Kind {
        if b.count >= 4, b.starts(with: [0x50, 0x4B, 0x03, 0x04]) { return .zip }
        if b.starts(with: [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]) { return .legacyStream }
        if b.count >= 262, b[257..<262].elementsEqual("ustar".utf8) { return .legacyTar }
        return .other
    }

    /// - Parameter bareTensorName: a pickle whose root is one tensor (aTLAS's coefficient files)
    ///   is read as that single tensor under this name; nil refuses it (a checkpoint is a dict).
    public convenience init(path: String, bareTensorName: String? = nil) throws {
        try self.init(mapped: try MappedFile(path: path), bareTensorName: bareTensorName)
    }

    public init(mapped file: MappedFile, bareTensorName: String? = nil) throws {
        self.file = file
        let path = file.path
        let all = file.bytes
        switch TorchArchive.kind(of: all) {
        case .zip: break
        case .legacyStream:
            throw FormatError(file: path, "a PyTorch checkpoint in the legacy pre-1.6 format (or saved with _use_new_zipfile_serialization=False): not read; re-save it with torch.save from PyTorch >= 1.6, or convert it with transformers")
        case .legacyTar:
            throw FormatError(file: path, "a PyTorch checkpoint in the legacy tar format of the earliest releases: not read")
        case .other:
            throw FormatError(file: path, "not a PyTorch zip checkpoint (no zip signature)")
        }
        let archive = try ZipDirectory(all, file: path)
        guard let first = archive.records.first, let slash = first.name.firstIndex(of: "/") else {
            throw FormatError(file: path, "a zip archive whose first record is not in a folder: not a torch.save checkpoint")
        }
        let prefix = String(first.name[...slash])
        var byName: [String: ZipDirectory.Record] = [:]
        for r in archive.records where r.name.hasPrefix(prefix) { byName[String(r.name.dropFirst(prefix.count))] = r }
        if byName["constants.pkl"] != nil || byName["code/"] != nil || archive.records.contains(where: { $0.name.hasPrefix(prefix + "code/") }) {
            throw FormatError(file: path, "a TorchScript archive (a scripted model, not a state dict): not read")
        }
        guard let pkl = byName["data.pkl"] else { throw FormatError(file: path, "no \(prefix)data.pkl in the archive: not a torch.save checkpoint") }
        guard pkl.method == 0, pkl.compressedSize == pkl.size else {
            throw FormatError(file: path, "record '\(pkl.name)' is compressed (zip method \(pkl.method)); torch.save never compresses: re-save the file")
        }
        if let bo = byName["byteorder"] {
            let text = String(decoding: file.bytes(at: bo.dataOffset, count: bo.compressedSize), as: UTF8.self)
            guard text == "little" else { throw FormatError(file: path, "byte order '\(text)': only little-endian checkpoints are read") }
        }
        let pickle: SafePickle.Result
        do { pickle = try SafePickle.load(file.bytes(at: pkl.dataOffset, count: pkl.size)) } catch let r as SafePickle.Refusal {
            throw FormatError(file: path, r.description)
        }
        var warnings: [String] = []
        let found: [(String, SafePickle.Tensor)]
        if let bareTensorName, case let .tensor(t) = pickle.root {
            found = [(bareTensorName, t)]
        } else {
            found = try TorchArchive.stateDict(pickle, file: path, warnings: &warnings)
        }
        var infos: [TensorInfo] = []
        var copies: [String: UnsafeMutableRawBufferPointer] = [:]
        do {
            for (name, t) in found {
                func fail(_ m: String) -> FormatError { FormatError(file: path, tensor: name, m) }
                guard let dtype = t.dtype.safetensors else { throw fail("torch dtype \(t.dtype.rawValue) has no safetensors equivalent: refused") }
                guard let rec = byName["data/" + t.storage.key] else { throw fail("its storage record data/\(t.storage.key) is missing from the archive") }
                guard rec.method == 0, rec.compressedSize == rec.size else { throw fail("its storage record is compressed (zip method \(rec.method))") }
                let elem = t.dtype.size
                let storageBytes = t.storage.dtype == nil ? t.storage.count : t.storage.count.multipliedReportingOverflow(by: t.storage.dtype!.size).partialValue
                guard storageBytes <= rec.size else { throw fail("the storage says \(storageBytes) bytes, its record holds \(rec.size)") }
                if let sd = t.storage.dtype, sd != t.dtype { throw fail("a \(t.dtype.rawValue) view of a \(sd.rawValue) storage") }
                let available = storageBytes / elem
                var count = 1
                for d in t.size {
                    let (p, o) = count.multipliedReportingOverflow(by: d)
                    guard !o, p < 1 << 48 else { throw fail("shape \(t.size) is too large") }
                    count = p
                }
                if count > 0 {
                    var last = t.offset
                    for (d, s) in zip(t.size, t.stride) {
                        let (p, o) = (d - 1).multipliedReportingOverflow(by: s)
                        guard !o else { throw fail("stride \(t.stride) overflows") }
                        last += p
                    }
                    guard last < available else {
                        throw fail("view (offset \(t.offset), size \(t.size), stride \(t.stride)) reaches past its storage of \(available) elements")
                    }
                }
                let shape = t.size.map { UInt64($0) }
                let bytes = count * elem
                if count == 0 {
                    infos.append(TensorInfo(name: name, dtype: dtype, shape: shape, begin: 0, end: 0))
                } else if TorchArchive.isContiguous(size: t.size, stride: t.stride) {
                    let begin = UInt64(rec.dataOffset + t.offset * elem)
                    infos.append(TensorInfo(name: name, dtype: dtype, shape: shape, begin: begin, end: begin + UInt64(bytes)))
                } else {
                    let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 64)
                    copies[name] = copy
                    TorchArchive.gather(from: file.bytes(at: rec.dataOffset, count: storageBytes), t, elem: elem, into: copy)
                    infos.append(TensorInfo(name: name, dtype: dtype, shape: shape, begin: 0, end: UInt64(bytes)))
                }
            }
        } catch {
            for c in copies.values { c.deallocate() }
            throw error
        }
        tensors = infos
        self.copies = copies
        self.warnings = warnings
    }

    deinit { for c in copies.values { c.deallocate() } }

    public func bytes(_ t: TensorInfo) -> UnsafeRawBufferPointer {
        if let c = copies[t.name] { return UnsafeRawBufferPointer(c) }
        return file.bytes(at: Int(t.begin), count: t.byteCount)
    }
    public func willNeed(_ t: TensorInfo) {
        if copies[t.name] == nil { file.willNeed(offset: Int(t.begin), count: t.byteCount) }
    }
    public func release(_ t: TensorInfo) {
        if copies[t.name] == nil { file.release(offset: Int(t.begin), count: t.byteCount) }
    }
    public func release(_ t: TensorInfo, bytes range: Range<Int>) {
        guard copies[t.name] == nil else { return }
        let r = range.clamped(to: 0..<t.byteCount)
        file.release(offset: Int(t.begin) + r.lowerBound, count: r.count)
    }

    /// C order, ignoring dimensions of size 1 (whose stride does not matter).
    static func isContiguous(size: [Int], stride: [Int]) -> Bool {
        var expected = 1
        for (d, s) in zip(size, stride).reversed() where d != 1 {
            if s != expected { return false }
            expected *= d
        }
        return true
    }

    /// Copies a strided view into C order.
    static func gather(from storage: UnsafeRawBufferPointer, _ t: SafePickle.Tensor, elem: Int, into out: UnsafeMutableRawBufferPointer) {
        let n = t.size.count
        var index = [Int](repeating: 0, count: n)
        var source = t.offset
        var k = 0
        let total = out.count / elem
        while k < total {
            (out.baseAddress! + k * elem).copyMemory(from: storage.baseAddress! + source * elem, byteCount: elem)
            k += 1
            var d = n - 1
            while d >= 0 {
                index[d] += 1
                source += t.stride[d]
                if index[d] < t.size[d] { break }
                source -= t.stride[d] * t.size[d]
                index[d] = 0
                d -= 1
            }
        }
    }

    /// The tensors of the pickled object, by name, in the pickle's order. A flat dict (what
    /// transformers and PEFT save) is read as is; nested dicts give dotted names, except that a
    /// root holding its tensors under one key only (`{"state_dict": {...}, "epoch": 3}`) is
    /// unwrapped. Values that are not tensors are skipped with a warning.
    static func stateDict(_ p: SafePickle.Result, file: String, warnings: inout [String]) throws -> [(String, SafePickle.Tensor)] {
        guard case let .dict(rootIndex) = p.root else {
            throw FormatError(file: file, "the pickle holds no dict of tensors (a torch.save of a state dict is a dict)")
        }
        func key(_ k: SafePickle.Value) -> String? {
            switch k {
            case let .string(s): return s
            case let .int(i): return String(i)
            default: return nil
            }
        }
        func hasTensors(_ v: SafePickle.Value, depth: Int) -> Bool {
            switch v {
            case .tensor: return true
            case let .dict(i) where depth < 8: return p.dicts[i].contains { hasTensors($0.1, depth: depth + 1) }
            default: return false
            }
        }
        var root = rootIndex
        let direct = p.dicts[root].contains { if case .tensor = $0.1 { return true } else { return false } }
        let holders = p.dicts[root].filter { hasTensors($0.1, depth: 1) }
        if !direct, holders.count == 1, case let .dict(inner) = holders[0].1, let k = key(holders[0].0) {
            warnings.append("\(file): tensors read from the checkpoint's '\(k)' entry")
            root = inner
        }
        var out: [(String, SafePickle.Tensor)] = []
        var seen = Set<String>()
        var skipped = 0
        func walk(_ i: Int, _ prefix: String, depth: Int) throws {
            for (k, v) in p.dicts[i] {
                guard let name = key(k).map({ prefix + $0 }) else { skipped += 1; continue }
                switch v {
                case let .tensor(t):
                    guard seen.insert(name).inserted else { throw FormatError(file: file, tensor: name, "the checkpoint holds this name twice") }
                    out.append((name, t))
                case let .dict(j) where depth < 8 && hasTensors(v, depth: depth):
                    try walk(j, name + ".", depth: depth + 1)
                default:
                    skipped += 1
                }
            }
        }
        try walk(root, "", depth: 1)
        if skipped > 0 { warnings.append("\(file): " + (skipped == 1 ? "1 entry is not a tensor and was skipped" : "\(skipped) entries are not tensors and were skipped")) }
        return out
    }
}
