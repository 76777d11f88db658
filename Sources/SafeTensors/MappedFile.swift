#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSystem

/// A regular file mapped read-only, registered so that a SIGBUS inside it (the file shrank under
/// us) becomes a one-line error naming it. Shared by every container reader (safetensors, torch
/// zip archives), which serve tensor bytes straight from the mapping.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: UInt64
    /// nil for an empty file.
    public let base: UnsafeRawPointer?
    private let length: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FormatError(file: path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FormatError(file: path, "cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw FormatError(file: path, "not a regular file") }
        size = UInt64(st.st_size)
        guard size > 0 else { base = nil; length = 0; return }
        guard size <= UInt64(Int.max) else { throw FormatError(file: path, "file too large to map") }
        length = Int(size)
        guard let m = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
            throw FormatError(file: path, "cannot map: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(m)
        wt_register_mapping(m, length, path)
    }

    deinit {
        if let base {
            wt_unregister_mapping(base)
            munmap(UnsafeMutableRawPointer(mutating: base), length)
        }
    }

    /// The whole file.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: length) }

    /// Bytes `offset ..< offset + count` (the caller has checked them to lie in the file).
    public func bytes(at offset: Int, count: Int) -> UnsafeRawBufferPointer {
        guard count > 0, let base else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + offset, count: count)
    }

    /// Tells the kernel the byte range will be read soon (whole pages around it).
    public func willNeed(offset: Int, count: Int) {
        pages(offset: offset, count: count, inner: false) { madvise($0, $1, MADV_WILLNEED) }
    }

    /// Drops the range's pages from this process's resident set (they stay in the page cache).
    /// Only whole pages inside the range are released, so neighbours are never affected.
    public func release(offset: Int, count: Int) {
        pages(offset: offset, count: count, inner: true) { madvise($0, $1, MADV_DONTNEED) }
    }

    private func pages(offset: Int, count: Int, inner: Bool, _ body: (UnsafeMutableRawPointer, Int) -> Int32) {
        guard let base, count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = offset, end = offset + count
        let lo = inner ? (start + page - 1) / page * page : start / page * page
        let hi = inner ? end / page * page : min(length, (end + page - 1) / page * page)
        guard hi > lo else { return }
        _ = body(UnsafeMutableRawPointer(mutating: base + lo), hi - lo)
    }
}
