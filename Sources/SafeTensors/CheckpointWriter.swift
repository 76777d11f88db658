#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import CSystem

/// A tensor the writer will hold: declared up front so every header can be written first.
public struct OutputTensor: Sendable, Equatable {
    public let name: String
    public let dtype: DType
    public let shape: [UInt64]
    public init(name: String, dtype: DType, shape: [UInt64]) { self.name = name; self.dtype = dtype; self.shape = shape }
    public init(name: String, dtype: DType, shape: [Int]) { self.init(name: name, dtype: dtype, shape: shape.map { UInt64($0) }) }

    public var count: Int { shape.reduce(1) { $0 * Int(clamping: $1) } }
    public var byteCount: Int { count * dtype.bits / 8 }
}

/// One of n processes writing one sharded checkpoint (`--part i/n`): part `index` (1-based)
/// writes only its share of the shards, named and filled exactly as the whole run fills them.
public struct OutputPart: Sendable, Equatable {
    public let index: Int
    public let count: Int
    public init(index: Int, count: Int) { self.index = index; self.count = count }

    /// The part (0-based) each shard belongs to: shards in order, cut into `count` runs of about
    /// equal bytes (a shard goes to the part holding the middle of its bytes). Depends only on
    /// the shard sizes, so every process computes the same split.
    public static func assign(shardBytes: [Int], count: Int) -> [Int] {
        let total = max(1, shardBytes.reduce(0, +))
        var before = 0
        return shardBytes.map { b in
            defer { before += b }
            let middle = Double(before) + Double(b) / 2
            return min(count - 1, Int(middle * Double(count) / Double(total)))
        }
    }
}

/// Where and how a checkpoint is written.
public enum OutputLayout: Sendable, Equatable {
    /// One `.safetensors` file.
    case file(String)
    /// A Hugging Face folder: `model.safetensors`, or `model-0000k-of-0000n.safetensors` shards plus
    /// `model.safetensors.index.json` when `shardSize` splits it.
    case folder(String, shardSize: UInt64?)

    /// `-o OUT`: a path ending in `.safetensors` is a file, anything else a folder.
    public static func from(path: String, shardSize: UInt64?) throws -> OutputLayout {
        if path.hasSuffix(".safetensors") {
            if shardSize != nil { throw FormatError(file: path, "--shard-size needs a folder as output, not a .safetensors file") }
            return .file(path)
        }
        return .folder(path, shardSize: shardSize)
    }

    public var path: String {
        switch self { case let .file(p): return p; case let .folder(p, _): return p }
    }
}

/// Streams a checkpoint to disk: every header is laid out and written first (so data can be written
/// tensor by tensor, in any order, from any thread, with `pwrite` at known offsets), each file goes
/// to a temporary name in the target folder, and `commit` fsyncs and renames. Nothing appears under
/// the final names unless `commit` succeeds; `abort` (or deinit without commit) removes the temporaries.
///
/// Layout is the reference writer's: tensors sorted by dtype (descending alignment) then name, the
/// header padded with spaces to a multiple of 8, so every tensor is naturally aligned.
public final class CheckpointWriter: @unchecked Sendable {
    public struct ShardFile: Sendable {
        /// Where the file is renamed to on commit (inside the staging folder of a folder output).
        public let finalPath: String
        /// The name the file will have once the output is published (reports, messages).
        public let displayPath: String
        public let tmpPath: String
        public let fd: Int32
        public let dataStart: Int
        public let size: Int
        public let names: [String]
    }

    public let layout: OutputLayout
    public let tensors: [OutputTensor]
    public private(set) var shards: [ShardFile] = []
    /// For tensor i: shard index and absolute file offset of its first byte.
    private var location: [(shard: Int, offset: Int)] = []
    private var written: [Int]
    /// Per file: the write-behind count.
    private var behind: [WriteBehind] = []
    private let lock = Mutex()
    private var committed = false
    private var createdFolder = false
    /// The folder output this writer stages into, if any: names in messages are the published ones.
    private let transaction: OutputTransaction?
    /// With `--part`: which tensors this process writes (their shards are its share).
    public let part: OutputPart?
    private var owned: [Bool]
    private func displayPath(_ p: String) -> String { transaction?.published(p) ?? p }

    /// Shard file name as Hugging Face writes it (1-based, 5 digits).
    public static func shardName(_ k: Int, of n: Int) -> String {
        func five(_ v: Int) -> String { let s = String(v); return String(repeating: "0", count: max(0, 5 - s.count)) + s }
        return "model-\(five(k))-of-\(five(n)).safetensors"
    }

    /// Greedy split in plan order, like huggingface_hub's `split_state_dict_into_shards_factory`:
    /// a tensor larger than the limit gets its own shard; otherwise a new shard starts when the
    /// current one would exceed the limit.
    public static func splitIntoShards(_ tensors: [OutputTensor], maxBytes: UInt64?) -> [[Int]] {
        guard let maxBytes else { return [Array(tensors.indices)] }
        var shards: [[Int]] = []
        var current: [Int] = []
        var size: UInt64 = 0
        for (i, t) in tensors.enumerated() {
            let b = UInt64(t.byteCount)
            if b > maxBytes { shards.append([i]); continue }
            if !current.isEmpty && size + b > maxBytes { shards.append(current); current = []; size = 0 }
            current.append(i)
            size += b
        }
        if !current.isEmpty { shards.append(current) }
        return shards.isEmpty ? [[]] : shards
    }

    /// The files a layout produces for these tensors, with the indices of the tensors in each.
    public static func plannedFiles(layout: OutputLayout, tensors: [OutputTensor]) -> [(path: String, tensors: [Int])] {
        switch layout {
        case let .file(p):
            return [(p, Array(tensors.indices))]
        case let .folder(p, shardSize):
            let groups = splitIntoShards(tensors, maxBytes: shardSize)
            return groups.enumerated().map { k, g in
                (FileSystem.join(p, groups.count == 1 ? "model.safetensors" : shardName(k + 1, of: groups.count)), g)
            }
        }
    }

    /// Lays out and creates the temporary files.
    /// - Parameter metadata: `__metadata__` entries (written with sorted keys).
    public init(layout: OutputLayout, tensors: [OutputTensor], metadata: [String: String], transaction: OutputTransaction? = nil,
                part: OutputPart? = nil) throws {
        self.layout = layout
        self.transaction = transaction
        self.tensors = tensors
        self.part = part
        self.written = Array(repeating: 0, count: tensors.count)
        self.owned = Array(repeating: part == nil, count: tensors.count)
        var seen = Set<String>()
        for t in tensors {
            guard t.name != "__metadata__" else {
                throw FormatError(file: displayPath(layout.path), tensor: t.name, "this name is reserved for the header's metadata")
            }
            guard seen.insert(t.name).inserted else { throw FormatError(file: displayPath(layout.path), tensor: t.name, "written twice") }
            guard t.dtype.bits * t.count % 8 == 0 else {
                throw FormatError(file: displayPath(layout.path), tensor: t.name, "does not end on a byte boundary")
            }
        }
        let files = CheckpointWriter.plannedFiles(layout: layout, tensors: tensors)
        let dir: String
        switch layout {
        case let .file(p):
            dir = FileSystem.dirname(p)
        case let .folder(p, _):
            dir = p
            switch FileSystem.kind(p) {
            case .missing:
                guard mkdir(p, 0o755) == 0 || (part != nil && errno == EEXIST) else {
                    throw FormatError(file: p, "cannot create the output folder: \(String(cString: strerror(errno)))")
                }
                createdFolder = true
            case .directory: break
            default: throw FormatError(file: p, "exists and is not a folder")
            }
        }
        location = Array(repeating: (0, 0), count: tensors.count)
        let partOf = part.map { p in OutputPart.assign(shardBytes: files.map { $0.tensors.reduce(0) { $0 + tensors[$1].byteCount } }, count: p.count) }
        do {
            for (k, (finalPath, group)) in files.enumerated() {
                if let part, let partOf, partOf[k] != part.index - 1 { continue }
                for i in group { owned[i] = true }
                try createShard(index: shards.count, group: group, finalPath: finalPath, dir: dir, metadata: metadata)
            }
        } catch {
            abort()
            throw error
        }
    }

    private func createShard(index k: Int, group: [Int], finalPath: String, dir: String, metadata: [String: String]) throws {
        // Reference order: dtype descending (alignment), then name by bytes.
        let order = group.sorted {
            let a = tensors[$0], b = tensors[$1]
            if a.dtype != b.dtype { return a.dtype > b.dtype }
            return Array(a.name.utf8).lexicographicallyPrecedes(Array(b.name.utf8))
        }
        var members: [(String, JSONValue)] = []
        if !metadata.isEmpty {
            let sorted = metadata.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
            members.append(("__metadata__", .object(sorted.map { ($0.key, .string($0.value)) })))
        }
        var offset = 0
        var relative: [(Int, Int)] = []
        for i in order {
            let t = tensors[i]
            let end = offset + t.byteCount
            members.append((t.name, .object([
                ("dtype", .string(t.dtype.rawValue)),
                ("shape", .array(t.shape.map { .uint($0) })),
                ("data_offsets", .array([.int(offset), .int(end)])),
            ])))
            relative.append((i, offset))
            offset = end
        }
        var header = Array(JSONValue.object(members).compact().utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        guard UInt64(header.count) <= Header.maxHeaderSize else {
            throw FormatError(file: displayPath(finalPath), "the header would be \(header.count) bytes, over the 100 MB that readers accept: use --shard-size")
        }
        let dataStart = 8 + header.count
        let size = dataStart + offset
        var tmpl = Array(OutputTransaction.temporaryTemplate(for: FileSystem.join(dir, FileSystem.basename(finalPath))).utf8CString)
        let fd = mkstemp(&tmpl)
        guard fd >= 0 else { throw FormatError(file: displayPath(finalPath), "cannot create a temporary file beside it: \(String(cString: strerror(errno)))") }
        let tmpPath = String(decoding: tmpl.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        _ = wt_register_temporary(tmpPath)
        shards.append(ShardFile(finalPath: finalPath, displayPath: displayPath(finalPath), tmpPath: tmpPath, fd: fd, dataStart: dataStart, size: size,
                                names: order.map { tensors[$0].name }))
        behind.append(WriteBehind())
        fchmod(fd, 0o644)
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw FormatError(file: displayPath(finalPath), "cannot size the output (\(size) bytes): \(String(cString: strerror(errno)))")
        }
        var prefix = [UInt8](repeating: 0, count: 8)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { for j in 0..<8 { prefix[j] = $0[j] } }
        prefix.append(contentsOf: header)
        try prefix.withUnsafeBytes { try CheckpointWriter.pwriteAll(fd, $0, at: 0, path: displayPath(finalPath)) }
        for (i, rel) in relative { location[i] = (k, dataStart + rel) }
    }

    static func pwriteAll(_ fd: Int32, _ buf: UnsafeRawBufferPointer, at offset: Int, path: String) throws {
        var done = 0
        while done < buf.count {
            // Linux caps one call near 2 GiB: loop on short writes.
            let n = pwrite(fd, buf.baseAddress! + done, min(buf.count - done, 1 << 30), off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError(file: path, "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    /// Whether this process writes tensor `index` (always, unless it is one part of a `--part` run).
    public func owns(_ index: Int) -> Bool { owned[index] }

    /// Writes `bytes` into tensor `index` starting `offset` bytes into the tensor. Thread-safe for
    /// disjoint ranges.
    public func write(tensor index: Int, at offset: Int = 0, _ bytes: UnsafeRawBufferPointer) throws {
        let t = tensors[index]
        precondition(owned[index], "CheckpointWriter: '\(t.name)' belongs to another part")
        precondition(offset >= 0 && offset + bytes.count <= t.byteCount, "CheckpointWriter: write past the end of '\(t.name)'")
        guard bytes.count > 0 else { return }
        let loc = location[index]
        try CheckpointWriter.pwriteAll(shards[loc.shard].fd, bytes, at: loc.offset + offset, path: shards[loc.shard].displayPath)
        let due = lock.withLock { () -> Bool in
            written[index] += bytes.count
            return behind[loc.shard].add(bytes.count)
        }
        if due { WriteBehind.request(shards[loc.shard].fd) }
    }

    /// Fsyncs and renames every file into place, writes the index for a sharded folder, and
    /// removes weight files of an earlier run that the new set does not replace.
    public func commit() throws {
        for (i, t) in tensors.enumerated() where owned[i] && written[i] != t.byteCount {
            abort()
            throw FormatError(file: displayPath(layout.path), tensor: t.name, "internal error: \(written[i]) of \(t.byteCount) bytes were written")
        }
        do {
            for s in shards {
                guard fsync(s.fd) == 0 else { throw FormatError(file: s.displayPath, "fsync failed: \(String(cString: strerror(errno)))") }
            }
            if case let .folder(dir, _) = layout, shards.count > 1, part == nil {
                try writeIndex(dir: dir)
            }
            for s in shards {
                close(s.fd)
                guard rename(s.tmpPath, s.finalPath) == 0 else {
                    throw FormatError(file: s.displayPath, "cannot rename into place: \(String(cString: strerror(errno)))")
                }
                wt_unregister_temporary(s.tmpPath)
            }
            committed = true
            // A part leaves the other parts' shards alone (the index step checks the set).
            if case let .folder(dir, _) = layout, part == nil { removeStaleWeights(dir: dir) }
            if let first = shards.first { syncDirectory(FileSystem.dirname(first.finalPath)) }
        } catch {
            abort()
            throw error
        }
    }

    private func writeIndex(dir: String) throws {
        var map: [(String, JSONValue)] = []
        for s in shards { for n in s.names { map.append((n, .string(FileSystem.basename(s.finalPath)))) } }
        let total = tensors.reduce(0) { $0 + $1.byteCount }
        let index = JSONValue.object([
            ("metadata", .object([("total_size", .int(total))])),
            ("weight_map", .object(map)),
        ])
        try AtomicFile.write(Array((index.pretty(indent: 2, sortKeys: true) + "\n").utf8), to: FileSystem.join(dir, Checkpoint.indexName))
    }

    /// An earlier run may have left more shards, or a single file where shards now are.
    private func removeStaleWeights(dir: String) {
        let keep = Set(shards.map { FileSystem.basename($0.finalPath) })
        for name in FileSystem.list(dir) {
            let isWeight = name == "model.safetensors" || (name.hasPrefix("model-") && name.hasSuffix(".safetensors"))
            if isWeight && !keep.contains(name) { unlink(FileSystem.join(dir, name)) }
            if name == Checkpoint.indexName && shards.count == 1 { unlink(FileSystem.join(dir, name)) }
        }
    }

    /// Removes every temporary file (and the output folder if this writer created it and it is empty).
    public func abort() {
        guard !committed else { return }
        for s in shards {
            close(s.fd)
            unlink(s.tmpPath)
            wt_unregister_temporary(s.tmpPath)
        }
        shards = []
        if createdFolder, case let .folder(p, _) = layout { rmdir(p) }
        committed = true
    }

    deinit { abort() }
}

func syncDirectory(_ dir: String) {
    let d = open(dir, O_RDONLY | O_DIRECTORY)
    if d >= 0 { fsync(d); close(d) }
}

/// Small files (indexes, reports, copied configs): temporary name, fsync, rename.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to path: String) throws {
        var tmpl = Array(OutputTransaction.temporaryTemplate(for: path).utf8CString)
        let fd = mkstemp(&tmpl)
        guard fd >= 0 else { throw FormatError(file: path, "cannot create a temporary file beside it: \(String(cString: strerror(errno)))") }
        let tmp = String(decoding: tmpl.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        _ = wt_register_temporary(tmp)
        defer { wt_unregister_temporary(tmp) }
        do {
            fchmod(fd, 0o644)
            try bytes.withUnsafeBytes { try CheckpointWriter.pwriteAll(fd, $0, at: 0, path: path) }
            guard fsync(fd) == 0 else { throw FormatError(file: path, "fsync failed") }
            close(fd)
            guard rename(tmp, path) == 0 else { throw FormatError(file: path, "cannot rename into place: \(String(cString: strerror(errno)))") }
        } catch {
            close(fd)
            unlink(tmp)
            throw error
        }
    }
}

/// A pthread mutex, shared by the writer and the engine (no Foundation needed).
public final class Mutex: @unchecked Sendable {
    private var m = pthread_mutex_t()
    public init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return try body()
    }
}
