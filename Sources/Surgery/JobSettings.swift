import SafeTensors

/// What every command's job takes besides its own parameters: how to run, what to record, where
/// the report goes.
public struct JobSettings: Sendable {
    /// Worker threads (tensors in flight).
    public var threads = Engine.defaultThreads
    /// No progress line.
    public var quiet = false
    /// argv, for the report.
    public var command: [String] = []
    /// The result-defining part of the command, for the output's metadata.
    public var provenance = ""
    /// Where the JSON report goes (nil: the output's default).
    public var reportPath: String?
    /// Largest shard of a folder output.
    public var shardSize: UInt64?
    /// --include / --exclude.
    public var selection = TensorSelection()
    /// Tensors with more entries than this are merged in row blocks by the methods that would
    /// otherwise decode whole inputs to f32 (every non-linear merge method, ties and dare in
    /// task-vector apply): bit for bit the same output, memory a few blocks per input. 2^24 entries is 64 MiB of
    /// f32 per input; WTOOL_BLOCK_ABOVE overrides it (tests set it low).
    public var blockAbove = 1 << 24
    /// `--part i/n`: compute and write only this share of the output's shards.
    public var part: OutputPart?

    public init() {}
}
