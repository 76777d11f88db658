/// Releases the mapped pages a streaming reader has finished with, a few MiB at a time.
///
/// Each `madvise(MADV_DONTNEED)` on a mapping that other threads of the process use makes the
/// kernel shoot down their TLB entries with an inter-processor interrupt (an exit to the
/// hypervisor on a virtual machine): released per 64k-entry block, a 1 GB TIES merge spent about
/// 5% of its CPU time in those shoot-downs. Runs of consecutive reads are gathered and released
/// once `chunk` bytes have accumulated, when the tensor's end is reached, when a read does not
/// continue the run, or on `flush()`; so a reader keeps at most `chunk` bytes of a tensor
/// resident beyond what it reads.
public struct TrailingRelease {
    /// 4 MiB: 32 times fewer calls than per 128 KiB block, a few MiB of resident pages per input.
    public static let chunk = 4 << 20

    /// The tensor's size in bytes: a run reaching it is released at once.
    let end: Int
    let release: (Range<Int>) -> Void
    private var pending: Range<Int>?

    /// For a tensor of a checkpoint.
    public init(_ checkpoint: Checkpoint, _ entry: Checkpoint.Entry) {
        self.init(end: entry.info.byteCount) { checkpoint.release(entry, bytes: $0) }
    }

    /// For `end` bytes released by `release` (tests count the calls).
    public init(end: Int, release: @escaping (Range<Int>) -> Void) {
        self.end = end
        self.release = release
    }

    /// The reader is done with bytes `range` of the tensor.
    public mutating func done(with range: Range<Int>) {
        if let p = pending, p.upperBound == range.lowerBound {
            pending = p.lowerBound..<range.upperBound
        } else {
            flush()
            pending = range
        }
        if let p = pending, p.count >= TrailingRelease.chunk || p.upperBound >= end { flush() }
    }

    /// Releases what is pending.
    public mutating func flush() {
        if let p = pending, !p.isEmpty { release(p) }
        pending = nil
    }
}
