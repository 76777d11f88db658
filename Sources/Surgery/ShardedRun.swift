import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

/// One job split across machines (`--part i/n`): each part writes its share of the shards and a
/// part report into the output folder; once every shard of the run is there (all carrying the
/// same run fingerprint), `complete` writes model.safetensors.index.json and the run's report.
/// `wtool index OUT_DIR` calls it; so does each part when it finishes, so the last one completes
/// the folder by itself.
public enum ShardedRun {
    public static func partReportName(_ p: OutputPart) -> String { "wtool-report.part-\(p.index)-of-\(p.count).json" }

    /// Checks the shard set and writes the index and the report. Throws, naming what is missing or
    /// foreign, when the set is not complete.
    @discardableResult
    public static func complete(folder: String) throws -> RunReport {
        var shards: [(k: Int, n: Int, name: String)] = []
        for name in FileSystem.list(folder) where name.hasPrefix("model-") && name.hasSuffix(".safetensors") {
            let parts = name.dropFirst("model-".count).dropLast(".safetensors".count).split(separator: "-")
            guard parts.count == 3, parts[1] == "of", let k = Int(parts[0]), let n = Int(parts[2]) else { continue }
            shards.append((k, n, name))
        }
        guard let n = shards.first?.n else { throw FormatError(file: folder, "no model-0000k-of-0000n.safetensors shards here") }
        if let other = shards.first(where: { $0.n != n }) {
            throw FormatError(file: FileSystem.join(folder, other.name), "says \(other.n) shards, another shard says \(n): two runs share this folder")
        }
        shards.sort { $0.k < $1.k }
        if let missing = (1...n).first(where: { k in !shards.contains { $0.k == k } }) {
            throw FormatError(file: folder, "shard \(CheckpointWriter.shardName(missing, of: n)) is missing: a part has not finished (or failed)")
        }
        var fingerprint: String? = nil
        var weightMap: [(String, JSONValue)] = []
        var total = 0
        for s in shards {
            let path = FileSystem.join(folder, s.name)
            let f = try SafeTensorsFile(path: path)
            let meta = Dictionary(f.metadata ?? [], uniquingKeysWith: { a, _ in a })
            guard let run = meta["wtool.run"] else { throw FormatError(file: path, "has no wtool.run fingerprint: not written by a wtool part") }
            if let fingerprint, run != fingerprint {
                throw FormatError(file: path, "belongs to another run (fingerprint \(run), the other shards \(fingerprint)): rerun that part")
            }
            fingerprint = run
            for t in f.tensors { weightMap.append((t.name, .string(s.name))); total += t.byteCount }
        }
        var parts: [JSONValue] = []
        var count: Int? = nil
        for name in FileSystem.list(folder).sorted() where name.hasPrefix("wtool-report.part-") && name.hasSuffix(".json") {
            let fields = name.dropFirst("wtool-report.part-".count).dropLast(".json".count).split(separator: "-")
            if fields.count == 3, let c = Int(fields[2]) { count = count ?? c }
            if let json = try? JSONParser.parse(try FileSystem.readAll(FileSystem.join(folder, name))) { parts.append(json) }
        }
        let index = JSONValue.object([("metadata", .object([("total_size", .int(total))])), ("weight_map", .object(weightMap))])
        try AtomicFile.write(Array((index.pretty(indent: 2, sortKeys: true) + "\n").utf8), to: FileSystem.join(folder, Checkpoint.indexName))
        var report = RunReport(command: parts.first?["command"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        report.output = .object([("path", .string(folder)), ("files", .array(shards.map { .string(FileSystem.join(folder, $0.name)) }))])
        report.parameters = [("fingerprint", .string(fingerprint ?? "")), ("parts", .int(count ?? parts.count))]
        report.tensors = parts.flatMap { $0["tensors"]?.arrayValue ?? [] }.filter { $0["part"] == nil }
        report.summary = [("shards", .int(n)), ("tensors", .int(weightMap.count)), ("bytes", .int(total)),
                          ("part_reports", .array(parts.map { $0["summary"] ?? .null }))]
        try report.write(to: FileSystem.join(folder, "wtool-report.json"))
        return report
    }
}
