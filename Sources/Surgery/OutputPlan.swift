import SafeTensors

/// What every writing command shares: where the output goes, that it does not overwrite an
/// input, the provenance metadata, and the non-weight files copied from the reference input.
public struct OutputPlan: Sendable {
    public let layout: OutputLayout
    /// The recipe recorded in the output's metadata: the command without the options that cannot
    /// change the bytes (threads, output path, report, quiet), so reruns stay byte-identical.
    public let provenance: String

    public init(path: String, shardSize: UInt64?, provenance: String, inputs: [Checkpoint]) throws {
        layout = try OutputLayout.from(path: path, shardSize: shardSize)
        self.provenance = provenance
        try OutputPlan.refuseOverwritingInputs(layout, inputs)
        if case let .file(p) = layout {
            let dir = FileSystem.dirname(p)
            guard FileSystem.kind(dir) == .directory else { throw FormatError(file: p, "the folder '\(dir)' does not exist") }
        }
    }

    /// `__metadata__` of every file written: `format: pt` (transformers requires it) plus provenance.
    public var metadata: [String: String] {
        ["format": "pt", "wtool.version": wtoolVersion, "wtool.command": provenance]
    }

    /// The default report path: inside an output folder, beside an output file.
    public var defaultReportPath: String {
        switch layout {
        case let .file(p): return String(p.dropLast(".safetensors".count)) + ".report.json"
        case let .folder(p, _): return FileSystem.join(p, "wtool-report.json")
        }
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
    public func copyTokenizerFiles(from folder: String) throws -> [String] {
        guard case let .folder(out, _) = layout else { return [] }
        var copied: [String] = []
        for name in FileSystem.list(folder) where OutputPlan.tokenizerFiles.contains(name) {
            let p = FileSystem.join(folder, name)
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
    public func copyAuxiliaryFiles(from source: Checkpoint, skipping: Set<String> = [], weights: [OutputTensor]? = nil,
                                   edit: ((inout ModelConfig) throws -> Void)? = nil) throws -> [String] {
        guard case let .folder(out, _) = layout, let src = source.folder else { return [] }
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
