/// A checkpoint as users name it: one `.safetensors` file, or a Hugging Face model folder with
/// `model.safetensors` or shards plus `model.safetensors.index.json`; or the same in PyTorch's
/// format (`pytorch_model.bin`, shards plus `pytorch_model.bin.index.json`), read by a pickle
/// reader that executes nothing (TorchArchive). A folder with both uses the safetensors files,
/// as transformers does.
///
/// Opening validates every file fully (each shard by the reference reader's rules) and the
/// shard index against the shards, so a broken download fails here, before any work.
public final class Checkpoint: @unchecked Sendable {
    /// Where a tensor lives.
    public struct Entry: Sendable {
        public let info: TensorInfo
        public let fileIndex: Int
        public var name: String { info.name }
    }

    public static let indexName = "model.safetensors.index.json"
    public static let torchIndexName = "pytorch_model.bin.index.json"

    /// The path as given.
    public let path: String
    /// The folder holding config and tokenizer files, when the checkpoint is a folder.
    public let folder: String?
    public let files: [any TensorFile]
    /// Tensors in model order: shard by shard, each in the file's offset order.
    public let entries: [Entry]
    /// Non-fatal findings (for example an index whose total_size is wrong).
    public let warnings: [String]
    private let byName: [String: Int]

    public init(path: String) throws {
        self.path = path
        switch FileSystem.kind(path) {
        case .missing:
            throw FormatError(file: path, "no such file or folder")
        case .other:
            throw FormatError(file: path, "not a file or folder")
        case .file:
            folder = nil
            var warns: [String] = []
            files = [try Checkpoint.openFile(path, warnings: &warns)]
            entries = files[0].tensors.map { Entry(info: $0, fileIndex: 0) }
            warnings = warns
        case .directory:
            folder = path
            let names = FileSystem.list(path)
            let indexes = names.filter { $0.hasSuffix(".safetensors.index.json") }
            let weights = names.filter { $0.hasSuffix(".safetensors") }
            var warns: [String] = []
            if names.contains(Checkpoint.indexName) || indexes.count == 1 {
                let indexPath = FileSystem.join(path, names.contains(Checkpoint.indexName) ? Checkpoint.indexName : indexes[0])
                (files, entries) = try Checkpoint.openSharded(folder: path, indexPath: indexPath, warnings: &warns)
            } else if weights.isEmpty, names.contains(Checkpoint.torchIndexName) {
                (files, entries) = try Checkpoint.openSharded(folder: path, indexPath: FileSystem.join(path, Checkpoint.torchIndexName), warnings: &warns)
            } else {
                let bins = names.filter { $0.hasSuffix(".bin") && !$0.hasPrefix("training_args") }
                let chosen: String
                if weights.contains("model.safetensors") {
                    chosen = "model.safetensors"
                } else if weights.count == 1 {
                    chosen = weights[0]
                } else if weights.isEmpty, bins.contains("pytorch_model.bin") {
                    chosen = "pytorch_model.bin"
                } else if weights.isEmpty, bins.count == 1 {
                    chosen = bins[0]
                } else if weights.isEmpty {
                    throw FormatError(file: path, "no .safetensors (or pytorch_model.bin) file in this folder")
                } else {
                    throw FormatError(file: path, "\(weights.count) .safetensors files and no \(Checkpoint.indexName): name one file")
                }
                files = [try Checkpoint.openFile(FileSystem.join(path, chosen), warnings: &warns)]
                entries = files[0].tensors.map { Entry(info: $0, fileIndex: 0) }
            }
            warnings = warns
        }
        var idx: [String: Int] = [:]
        for (i, e) in entries.enumerated() { idx[e.name] = i }
        byName = idx
    }

    /// One file, by what its first bytes say: a PyTorch zip archive, or else safetensors (whose
    /// reader gives the precise error for anything else, Git LFS pointers included).
    public static func openFile(_ path: String, warnings: inout [String]) throws -> any TensorFile {
        let mapped = try MappedFile(path: path)
        switch TorchArchive.kind(of: mapped.bytes) {
        case .zip, .legacyStream, .legacyTar:
            let archive = try TorchArchive(mapped: mapped)
            warnings += archive.warnings
            return archive
        case .other:
            if mapped.bytes.starts(with: Array("GGUF".utf8)) {
                throw FormatError(file: path, "a GGUF file: turn it into a Hugging Face folder first with 'wtool convert \(path) -o DIR'")
            }
            return try SafeTensorsFile(mapped: mapped)
        }
    }

    private static func openSharded(folder: String, indexPath: String, warnings: inout [String]) throws -> ([any TensorFile], [Entry]) {
        let json: JSONValue
        do { json = try JSONParser.parse(try FileSystem.readAll(indexPath)) } catch let e as JSONParseError {
            throw FormatError(file: indexPath, "invalid JSON: \(e)")
        }
        guard let map = json["weight_map"]?.objectValue else {
            throw FormatError(file: indexPath, "no \"weight_map\" object")
        }
        var shardOf: [String: String] = [:]
        var shardNames: [String] = []
        for (tensor, v) in map {
            guard let shard = v.stringValue else { throw FormatError(file: indexPath, tensor: tensor, "weight_map value is not a file name") }
            guard !shard.contains("/") || shard.split(separator: "/").allSatisfy({ $0 != ".." }) else {
                throw FormatError(file: indexPath, tensor: tensor, "shard name '\(shard)' leaves the folder")
            }
            if shardOf[tensor] != nil { throw FormatError(file: indexPath, tensor: tensor, "weight_map names this tensor twice") }
            shardOf[tensor] = shard
            if !shardNames.contains(shard) { shardNames.append(shard) }
        }
        shardNames.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        var files: [any TensorFile] = []
        var entries: [Entry] = []
        var owner: [String: String] = [:]
        for (k, shard) in shardNames.enumerated() {
            let p = FileSystem.join(folder, shard)
            guard FileSystem.kind(p) == .file else {
                throw FormatError(file: indexPath, "the index names shard '\(shard)', which is missing")
            }
            let f = try Checkpoint.openFile(p, warnings: &warnings)
            files.append(f)
            for t in f.tensors {
                if let other = owner[t.name] {
                    throw FormatError(file: p, tensor: t.name, "also stored in shard '\(other)'")
                }
                owner[t.name] = shard
                if shardOf[t.name] == nil {
                    warnings.append("\(p): tensor '\(t.name)' is not listed in the index; it is used anyway")
                }
                entries.append(Entry(info: t, fileIndex: k))
            }
        }
        for (tensor, shard) in map.map({ ($0.0, $0.1.stringValue!) }) where owner[tensor] != shard {
            if let actual = owner[tensor] {
                throw FormatError(file: indexPath, tensor: tensor, "the index says shard '\(shard)' but it is stored in '\(actual)'")
            }
            throw FormatError(file: indexPath, tensor: tensor, "the index names shard '\(shard)', which has no such tensor")
        }
        // Tied tensors of a PyTorch shard share one storage, which total_size counts once.
        var ranges = Set<[UInt64]>()
        let total = entries.reduce(UInt64(0)) {
            let copied = $1.info.begin == 0 && files[$1.fileIndex] is TorchArchive
            return $0 + (copied || ranges.insert([UInt64($1.fileIndex), $1.info.begin, $1.info.end]).inserted ? UInt64($1.info.byteCount) : 0)
        }
        if let ts = json["metadata"]?["total_size"], ts.doubleValue.map({ UInt64(exactly: $0) }) != total {
            warnings.append("\(indexPath): metadata.total_size is \(ts.compact()), the tensors hold \(total) bytes")
        }
        return (files, entries)
    }

    public var tensorNames: [String] { entries.map(\.name) }
    public func entry(_ name: String) -> Entry? { byName[name].map { entries[$0] } }
    public func file(of e: Entry) -> any TensorFile { files[e.fileIndex] }
    public func bytes(_ e: Entry) -> UnsafeRawBufferPointer { files[e.fileIndex].bytes(e.info) }
    public func release(_ e: Entry) { files[e.fileIndex].release(e.info) }
    /// Releases bytes `range` of the tensor (see SafeTensorsFile.release(_:bytes:)).
    public func release(_ e: Entry, bytes range: Range<Int>) { files[e.fileIndex].release(e.info, bytes: range) }
    public func willNeed(_ e: Entry) { files[e.fileIndex].willNeed(e.info) }
    /// The file a tensor is stored in (for error messages).
    public func filePath(of e: Entry) -> String { files[e.fileIndex].path }
    public var totalBytes: UInt64 { entries.reduce(0) { $0 + UInt64($1.info.byteCount) } }
    /// The first file's metadata (shards carry the same).
    public var metadata: [(String, String)]? { files.first?.metadata }
}
