import SafeTensors
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What every writing command shares: where the output goes, that it does not overwrite an
/// input, the provenance metadata, the non-weight files copied from the reference input, and the
/// one output transaction. A folder output is built whole under a temporary sibling name and
/// published by `finish` (see `OutputTransaction`); a file output is written to a temporary name
/// and renamed by its writer. Nothing appears under the output's name unless the job finishes.
public final class OutputPlan: @unchecked Sendable {
    /// The output as the user named it.
    public let finalLayout: OutputLayout
    /// The recipe recorded in the output's metadata: the command without the options that cannot
    /// change the bytes (threads, output path, report, quiet), so reruns stay byte-identical.
    public let provenance: String
    private var transaction: OutputTransaction?
    /// Size, modification time and inode of every input file when the job started.
    private let inputStamps: [(path: String, stamp: FileSystem.Stamp?)]
    /// `--part i/n`: this process writes its share of the shards straight into the output folder
    /// (no staging: the other parts write beside it); `wtool index` (or the last part) completes it.
    public let part: OutputPart?
    /// Identifies the run (the recipe and the inputs' sizes) in every file's metadata, so the parts
    /// of one run can be told from another's; the same whether the run is split or not.
    public let fingerprint: String

    /// - Parameter inputFiles: inputs that are not checkpoints (a GGUF being imported), guarded
    ///   the same way: never overwritten, and checked not to change while the job runs.
    public init(path: String, shardSize: UInt64?, provenance: String, inputs: [Checkpoint], inputFiles: [String] = [],
                part: OutputPart? = nil) throws {
        finalLayout = try OutputLayout.from(path: path, shardSize: shardSize)
        self.provenance = provenance
        self.part = part
        if let part {
            guard case .folder(_, shardSize: .some) = finalLayout else {
                throw UsageError("--part \(part.index)/\(part.count) splits the shards of a folder output: give -o DIR and --shard-size")
            }
        }
        try OutputPlan.refuseOverwritingInputs(finalLayout, inputs)
        if let outReal = FileSystem.realPath(finalLayout.path) {
            for f in inputFiles where FileSystem.realPath(f).map({ $0 == outReal || FileSystem.dirname($0) == outReal }) == true {
                throw FormatError(file: finalLayout.path, "holds the input file '\(f)'; choose another output")
            }
        }
        if case let .file(p) = finalLayout {
            let dir = FileSystem.dirname(p)
            guard FileSystem.kind(dir) == .directory else { throw FormatError(file: p, "the folder '\(dir)' does not exist") }
            OutputTransaction.removeStaleTemporaries(in: dir)
        }
        inputStamps = (inputs.flatMap(\.files).map(\.path) + inputFiles).map { ($0, FileSystem.stamp($0)) }
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in (provenance + "\n" + inputStamps.map { String($0.stamp?.size ?? 0) }.joined(separator: ",")).utf8 {
            h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3
        }
        fingerprint = String(h, radix: 16)
    }

    /// Where writers write: the staging folder of a folder output (created on first use), or the
    /// output file itself.
    public func layout() throws -> OutputLayout {
        if part != nil { return finalLayout }
        switch finalLayout {
        case .file: return finalLayout
        case let .folder(p, shardSize): return .folder(try stage(p).staging, shardSize: shardSize)
        }
    }

    /// The folder to write extra files into (nil for a file output).
    public func folder() throws -> String? {
        if part != nil, case let .folder(p, _) = finalLayout {
            guard mkdir(p, 0o755) == 0 || errno == EEXIST else { throw FormatError(file: p, "cannot create the output folder: \(String(cString: strerror(errno)))") }
            return p
        }
        if case let .folder(p, _) = finalLayout { return try stage(p).staging }
        return nil
    }

    private func stage(_ path: String) throws -> OutputTransaction {
        if let transaction { return transaction }
        let t = try OutputTransaction(folder: path)
        transaction = t
        return t
    }

    /// A writer for the output's tensors, staged like everything else.
    public func writer(tensors: [OutputTensor], metadata: [String: String]? = nil) throws -> CheckpointWriter {
        try CheckpointWriter(layout: try layout(), tensors: tensors, metadata: metadata ?? self.metadata, transaction: transaction, part: part)
    }

    /// A writer for one checkpoint in a folder inside a folder output (the points of a merge path).
    public func writer(tensors: [OutputTensor], metadata: [String: String], subfolder: String) throws -> CheckpointWriter {
        guard case let .folder(_, shardSize) = try layout(), let root = try folder() else {
            throw UsageError("several checkpoints need a folder output")
        }
        return try CheckpointWriter(layout: .folder(FileSystem.join(root, subfolder), shardSize: shardSize), tensors: tensors,
                                    metadata: metadata, transaction: transaction)
    }

    /// `__metadata__` of every file written: `format: pt` (transformers requires it) plus provenance.
    public var metadata: [String: String] {
        ["format": "pt", "wtool.version": wtoolVersion, "wtool.command": provenance, "wtool.run": fingerprint]
    }

    /// The default report path: inside an output folder, beside an output file.
    var defaultReportPath: String {
        switch finalLayout {
        case let .file(p): return String(p.dropLast(".safetensors".count)) + ".report.json"
        case let .folder(p, _): return FileSystem.join(p, "wtool-report.json")
        }
    }

    /// Ends the job: checks that no input changed while it ran, writes the report (inside the
    /// output folder by default) and publishes the output. A report named elsewhere is written
    /// once the output is in place.
    public func finish(_ report: RunReport, reportPath: String?) throws {
        for (path, before) in inputStamps where FileSystem.stamp(path) != before {
            transaction?.abort()
            throw FormatError(file: path, "the file changed while it was being read (rewritten or replaced by another process); nothing was written")
        }
        if let part, case let .folder(dir, _) = finalLayout {
            // Each part reports beside its shards; the last one to finish completes the folder.
            try report.write(to: reportPath ?? FileSystem.join(dir, ShardedRun.partReportName(part)))
            _ = try? ShardedRun.complete(folder: dir)
            return
        }
        if reportPath == nil, let dir = try folder() {
            try report.write(to: FileSystem.join(dir, "wtool-report.json"))
        }
        try transaction?.commit()
        if reportPath != nil || transaction == nil { try report.write(to: reportPath ?? defaultReportPath) }
    }

    private static func refuseOverwritingInputs(_ layout: OutputLayout, _ inputs: [Checkpoint]) throws {
        let out = layout.path
        guard let outReal = FileSystem.realPath(out) else { return }  // does not exist yet
        for c in inputs {
            if let inReal = FileSystem.realPath(c.path), inReal == outReal {
                throw FormatError(file: out, "is an input of this command; choose another output")
            }
            for f in c.files where FileSystem.realPath(f.path).map({ FileSystem.dirname($0) == outReal || $0 == outReal }) == true {
                throw FormatError(file: out, "holds the input file '\(f.path)'; choose another output")
            }
        }
    }

    /// The files a Hugging Face tokenizer is made of (what `tokenizer_source` replaces).
    public static let tokenizerFiles: Set<String> = [
        "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
        "vocab.json", "merges.txt", "vocab.txt", "spiece.model", "chat_template.jinja", "chat_template.json",
    ]

    /// Copies the tokenizer files of another model folder into an output folder.
    public func copyTokenizerFiles(from source: String, into subfolder: String? = nil) throws -> [String] {
        guard let root = try folder() else { return [] }
        let out = subfolder.map { FileSystem.join(root, $0) } ?? root
        var copied: [String] = []
        for name in FileSystem.list(source) where OutputPlan.tokenizerFiles.contains(name) {
            let p = FileSystem.join(source, name)
            guard FileSystem.kind(p) == .file else { continue }
            try AtomicFile.write(try FileSystem.readAll(p), to: FileSystem.join(out, name))
            copied.append(name)
        }
        return copied
    }

    /// Copies config, tokenizer and other small non-weight files from `source`'s folder into an
    /// output folder (weights, indexes and earlier reports are not copied; hidden files neither).
    /// config.json is made to describe what was written: with `weights`, its dtype (in the
    /// input's own layout: `torch_dtype` or `dtype`) becomes the weights' dtype; `edit` applies a
    /// command's own changes (sizes, layer count, quantization). Unchanged, it is copied byte for
    /// byte.
    /// - Parameter subfolder: a folder inside the output to copy into (the outputs of a path).
    public func copyAuxiliaryFiles(from source: Checkpoint, skipping: Set<String> = [], weights: [OutputTensor]? = nil,
                                   into subfolder: String? = nil, edit: ((inout ModelConfig) throws -> Void)? = nil) throws -> [String] {
        guard let src = source.folder, let root = try folder() else { return [] }
        let out = subfolder.map { FileSystem.join(root, $0) } ?? root
        let weightSuffixes = [".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack"]
        var copied: [String] = []
        for name in FileSystem.list(src) where !name.hasPrefix(".") && !skipping.contains(name) && name != "wtool-report.json" {
            if weightSuffixes.contains(where: { name.hasSuffix($0) }) { continue }
            let p = FileSystem.join(src, name)
            guard FileSystem.kind(p) == .file else { continue }
            if name == "config.json", weights != nil || edit != nil {
                var config = try ModelConfig(path: p)
                let before = config.json
                if let weights, let d = ModelConfig.weightsDType(weights) { config.setDType(d) }
                try edit?(&config)
                if config.json != before {
                    try config.write(to: FileSystem.join(out, name))
                    copied.append(name)
                    continue
                }
            }
            try AtomicFile.write(try FileSystem.readAll(p), to: FileSystem.join(out, name))
            copied.append(name)
        }
        return copied
    }
}
