#if canImport(Glibc)
import Glibc
#endif
import SafeTensors
import Surgery

/// One harness per parser, chosen by WTOOL_FUZZ_TARGET: every input must end in a result or a
/// thrown error, never a trap, a hang or a leak. Parsers that take a path get the input as a file.
enum Target: String, CaseIterable {
    case header, index, gguf, recipe, spec, permutations, adapter, statistics, pickle, torchzip
}

let target: Target = {
    guard let p = getenv("WTOOL_FUZZ_TARGET"), let t = Target(rawValue: String(cString: p)) else {
        fatalError("set WTOOL_FUZZ_TARGET to one of \(Target.allCases.map(\.rawValue))")
    }
    return t
}()

/// A private scratch folder per process (libFuzzer may run several workers).
let scratch: String = {
    var tmpl = Array("/tmp/wtool-fuzz.XXXXXX".utf8CString)
    guard mkdtemp(&tmpl) != nil else { fatalError("mkdtemp") }
    return String(decoding: tmpl.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
}()

func writeFile(_ name: String, _ data: UnsafeRawBufferPointer) -> String {
    let path = scratch + "/" + name
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    if let b = data.baseAddress, data.count > 0 { _ = write(fd, b, data.count) }
    close(fd)
    return path
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    do {
        switch target {
        case .header:
            _ = try HeaderParser.parse(prefix: bytes, fileSize: UInt64(size), file: "fuzz")
        case .index:
            // An index naming two small valid shards: the index parser and its cross-checks.
            let folder = scratch + "/idx"
            mkdir(folder, 0o755)
            _ = writeFile("idx/model.safetensors.index.json", bytes)
            try ensureShards(folder)
            _ = try Checkpoint(path: folder)
        case .gguf:
            let file = try GGUFFile(path: writeFile("f.gguf", bytes))
            // what GGUF import makes of it: names, hyper-parameters, tokenizer files
            _ = try? GGUFModelImport(file)
            _ = try? GGUFTokenizerImport(file, contextLength: 64)
        case .recipe:
            _ = try MergeRecipe.load(yaml: String(decoding: bytes, as: UTF8.self), path: "fuzz.yml")
        case .spec:
            _ = try SpecFileReader.load(writeFile("spec.json", bytes))
        case .permutations:
            _ = try PermutationFile.read(writeFile("perm.json", bytes))
        case .adapter:
            _ = try PEFTAdapterConfig(path: writeFile("adapter_config.json", bytes))
        case .statistics:
            _ = try PruneStatistics(path: writeFile("stats.safetensors", bytes))
        case .pickle:
            _ = try SafePickle.load(bytes)
        case .torchzip:
            _ = try TorchArchive(path: writeFile("sd.bin", bytes))
        }
    } catch {}
    return 0
}

/// Two valid shards for the index harness, written once.
func ensureShards(_ folder: String) throws {
    for (name, tensor) in [("model-00001-of-00002.safetensors", "a"), ("model-00002-of-00002.safetensors", "b")] {
        let path = folder + "/" + name
        if FileSystem.kind(path) == .file { continue }
        let w = try CheckpointWriter(layout: .file(path), tensors: [OutputTensor(name: tensor, dtype: .F32, shape: [2])], metadata: [:])
        try [Float](repeating: 1, count: 2).withUnsafeBytes { try w.write(tensor: 0, $0) }
        try w.commit()
    }
}

/// SwiftPM links an executable's entry point under `<target>_main`; hand control to libFuzzer's
/// driver, which calls the harness above.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> Int32) -> Int32

@_cdecl("wtool_fuzz_main")
public func fuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var c = argc
    var v = argv
    return LLVMFuzzerRunDriver(&c, &v) { fuzz($0, $1) }
}
