/// One file of tensors a checkpoint is made of: a safetensors file or a PyTorch archive. Both serve
/// each tensor's bytes in C order from a read-only mapping (zero copy where the file allows).
public protocol TensorFile: AnyObject, Sendable {
    var path: String { get }
    /// Tensors in the order the file stores them.
    var tensors: [TensorInfo] { get }
    /// `__metadata__` of a safetensors file; nil for formats without one.
    var metadata: [(String, String)]? { get }
    /// The tensor's bytes (valid while this object lives).
    func bytes(_ t: TensorInfo) -> UnsafeRawBufferPointer
    /// Tells the kernel we will read this tensor soon.
    func willNeed(_ t: TensorInfo)
    /// Drops the tensor's pages from this process's resident set (they stay in the page cache).
    func release(_ t: TensorInfo)
    /// The same for bytes `range` of the tensor, which a reader streaming it in blocks has consumed:
    /// resident memory stays a few blocks even when one tensor is larger than memory.
    func release(_ t: TensorInfo, bytes range: Range<Int>)
}
