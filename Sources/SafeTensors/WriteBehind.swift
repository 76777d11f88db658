import CSystem

/// Write-behind for an output file: every `bytes` written, the kernel is asked to start writing
/// the file out (`wt_start_writeback`, sync_file_range without waiting), so the disk works while
/// the job computes and the final fsync waits for the last few MB, not the whole file. (The
/// kernel's own write-back starts only at 10% of memory dirty, or after 30 s.) Not thread-safe:
/// writers count under their lock and request outside it.
struct WriteBehind {
    static let bytes = 64 << 20
    private var pending = 0

    /// Counts `n` more bytes written; true when a request is due (the count starts again).
    mutating func add(_ n: Int) -> Bool {
        pending += n
        guard pending >= WriteBehind.bytes else { return false }
        pending = 0
        return true
    }

    /// Starts the write-out of fd's dirty pages (a hint: errors surface at fsync).
    static func request(_ fd: Int32) { _ = wt_start_writeback(fd) }
}
