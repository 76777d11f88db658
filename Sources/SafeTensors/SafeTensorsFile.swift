#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSystem

/// One `.safetensors` file, memory-mapped read-only and validated.
///
/// Tensor bytes are served zero-copy from the mapping; they may be unaligned when a third-party
/// writer did not pad, so consumers read them through the codecs (which use unaligned loads),
/// never by casting the pointer. Pages a consumer is done with can be handed back to the kernel
/// with `release`, which keeps resident memory bounded on models larger than RAM.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    public let header: Header
    public let fileSize: UInt64
    private let base: UnsafeRawPointer?
    private let mappedLength: Int
    private let byName: [String: Int]

    public var tensors: [TensorInfo] { header.tensors }
    public var metadata: [(String, String)]? { header.metadata }

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FormatError(file: path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FormatError(file: path, "cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FormatError(file: path, "not a regular file") }
        fileSize = UInt64(st.st_size)
        if fileSize == 0 {
            base = nil
            mappedLength = 0
            header = try HeaderParser.parse(prefix: UnsafeRawBufferPointer(start: nil, count: 0), fileSize: 0, file: path)
        } else {
            guard fileSize <= UInt64(Int.max) else { throw FormatError(file: path, "file too large to map") }
            let len = Int(fileSize)
            guard let m = mmap(nil, len, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
                throw FormatError(file: path, "cannot map: \(String(cString: strerror(errno)))")
            }
            base = UnsafeRawPointer(m)
            mappedLength = len
            wt_register_mapping(m, len, path)
            do {
                header = try HeaderParser.parse(prefix: UnsafeRawBufferPointer(start: m, count: len), fileSize: fileSize, file: path)
            } catch {
                wt_unregister_mapping(m)
                munmap(m, len)
                throw error
            }
        }
        var idx: [String: Int] = [:]
        for (i, t) in header.tensors.enumerated() { idx[t.name] = i }
        byName = idx
    }

    deinit {
        if let base {
            wt_unregister_mapping(base)
            munmap(UnsafeMutableRawPointer(mutating: base), mappedLength)
        }
    }

    public func info(_ name: String) -> TensorInfo? { byName[name].map { header.tensors[$0] } }

    /// The tensor's bytes inside the mapping (valid while this object lives).
    public func bytes(_ t: TensorInfo) -> UnsafeRawBufferPointer {
        guard t.byteCount > 0, let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + Int(header.dataStart) + Int(t.begin), count: t.byteCount)
    }

    /// Tells the kernel we will read this tensor sequentially soon.
    public func willNeed(_ t: TensorInfo) {
        pageRange(t, inner: false) { madvise($0, $1, MADV_WILLNEED) }
    }

    /// Drops the tensor's pages from this process's resident set (they stay in the page cache).
    /// Only whole pages inside the tensor are released, so neighbours are never affected.
    public func release(_ t: TensorInfo) {
        pageRange(t, inner: true) { madvise($0, $1, MADV_DONTNEED) }
    }

    /// The same for bytes `range` of the tensor, which a reader streaming the tensor in blocks has
    /// consumed: resident memory stays a few blocks even when one tensor is larger than memory.
    public func release(_ t: TensorInfo, bytes range: Range<Int>) {
        pageRange(t, inner: true, range: range) { madvise($0, $1, MADV_DONTNEED) }
    }

    private func pageRange(_ t: TensorInfo, inner: Bool, range: Range<Int>? = nil, _ body: (UnsafeMutableRawPointer, Int) -> Int32) {
        guard let base, t.byteCount > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let r = (range ?? 0..<t.byteCount).clamped(to: 0..<t.byteCount)
        let start = Int(header.dataStart) + Int(t.begin) + r.lowerBound
        let end = start + r.count
        let lo = inner ? (start + page - 1) / page * page : start / page * page
        let hi = inner ? end / page * page : min(mappedLength, (end + page - 1) / page * page)
        guard hi > lo else { return }
        _ = body(UnsafeMutableRawPointer(mutating: base + lo), hi - lo)
    }
}
