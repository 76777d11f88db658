/// One `.safetensors` file, memory-mapped read-only and validated.
///
/// Tensor bytes are served zero-copy from the mapping; they may be unaligned when a third-party
/// writer did not pad, so consumers read them through the codecs (which use unaligned loads),
/// never by casting the pointer. Pages a consumer is done with can be handed back to the kernel
/// with `release`, which keeps resident memory bounded on models larger than RAM.
public final class SafeTensorsFile: TensorFile, @unchecked Sendable {
    public let header: Header
    private let file: MappedFile
    private let byName: [String: Int]

    public var path: String { file.path }
    public var fileSize: UInt64 { file.size }
    public var tensors: [TensorInfo] { header.tensors }
    public var metadata: [(String, String)]? { header.metadata }

    public convenience init(path: String) throws {
        try self.init(mapped: try MappedFile(path: path))
    }

    public init(mapped file: MappedFile) throws {
        self.file = file
        header = try HeaderParser.parse(prefix: file.bytes, fileSize: file.size, file: file.path)
        var idx: [String: Int] = [:]
        for (i, t) in header.tensors.enumerated() { idx[t.name] = i }
        byName = idx
    }

    public func info(_ name: String) -> TensorInfo? { byName[name].map { header.tensors[$0] } }

    private func offset(_ t: TensorInfo) -> Int { Int(header.dataStart) + Int(t.begin) }

    public func bytes(_ t: TensorInfo) -> UnsafeRawBufferPointer { file.bytes(at: offset(t), count: t.byteCount) }
    public func willNeed(_ t: TensorInfo) { file.willNeed(offset: offset(t), count: t.byteCount) }
    public func release(_ t: TensorInfo) { file.release(offset: offset(t), count: t.byteCount) }
    public func release(_ t: TensorInfo, bytes range: Range<Int>) {
        let r = range.clamped(to: 0..<t.byteCount)
        file.release(offset: offset(t) + r.lowerBound, count: r.count)
    }
}
