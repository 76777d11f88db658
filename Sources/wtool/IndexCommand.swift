import ArgumentParser
import SafeTensors
import Surgery

struct IndexCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "index",
        abstract: "Complete a folder written by --part I/N runs: check the shards, write the index and the report.",
        discussion: """
        Every part of a run writes its share of model-0000k-of-0000n.safetensors (named and filled \
        exactly as the whole run writes them) and wtool-report.part-I-of-N.json into OUT. When all \
        n shards are present and carry the same run fingerprint (wtool.run in their metadata), \
        index writes model.safetensors.index.json and wtool-report.json; a missing shard or one \
        from another run is an error naming it. The last part to finish does this by itself; run \
        index after the parts to be sure. See wtool(1), SPLITTING A JOB.
        """)
    @Argument(help: ArgumentHelp("The output folder of the parts.", valueName: "OUT_DIR")) var folder: String
    @Flag(name: .long, help: "No summary on stderr.") var quiet = false

    func run() throws {
        guard FileSystem.kind(folder) == .directory else { throw FormatError(file: folder, "not a folder") }
        let r = try ShardedRun.complete(folder: folder)
        let s = Dictionary(uniqueKeysWithValues: r.summary)
        note("indexed \(s["shards"]?.compact() ?? "?") shards, \(s["tensors"]?.compact() ?? "?") tensors, \(s["bytes"]?.compact() ?? "?") bytes -> \(folder)", quiet: quiet)
    }
}
