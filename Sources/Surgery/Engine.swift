import Dispatch
import CSystem
import Linalg
import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

/// The parallel half of the streaming engine: runs one job per tensor with at most `threads`
/// in flight (so memory stays bounded by a few tensors), collects results by index (so output
/// never depends on scheduling), and stops at the first error.
public enum Engine {
    /// Process-wide settings, once at start:
    /// - tensor-sized buffers come and go by the hundred MB: served straight from mmap, they go back
    ///   to the kernel when freed (glibc would otherwise raise its mmap threshold after the first free
    ///   and keep later buffers in per-thread heaps, where fragmentation holds resident memory);
    /// - BLAS runs one thread per call: wtool parallelises across tensors, and a fixed BLAS thread
    ///   count keeps LAPACK's results byte-identical whatever --threads is;
    /// - an interrupted run (Ctrl-C, SIGTERM) removes its temporary files, leaving nothing behind.
    public static func configureProcess() {
        wt_serve_large_allocations_from_mmap(1 << 20)
        wt_install_interrupt_cleanup()
        BLASThreads.set(1)
    }

    /// Cores available to this process.
    public static var defaultThreads: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Runs `body(i)` for i in 0..<count on `threads` workers and returns the results in index order.
    /// The first error thrown (lowest index among those that failed) is rethrown after workers stop.
    public static func map<T: Sendable>(count: Int, threads: Int, progress: Progress? = nil,
                                         _ body: @Sendable (Int) throws -> T) throws -> [T] {
        let box = ResultBox<T>(count: count)
        let workers = max(1, min(threads, count))
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while let i = box.claim() {
                do {
                    let r = try body(i)
                    box.store(i, r)
                    progress?.step()
                } catch {
                    box.fail(i, error)
                }
            }
        }
        if let e = box.firstError { throw e }
        return box.results()
    }
}

/// Shared state of one `Engine.map` run.
private final class ResultBox<T: Sendable>: @unchecked Sendable {
    private var slots: [T?]
    private var next = 0
    private var error: (Int, Error)?
    private let lock = Mutex()

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func claim() -> Int? {
        lock.withLock {
            guard error == nil, next < slots.count else { return nil }
            next += 1
            return next - 1
        }
    }
    func store(_ i: Int, _ v: T) { lock.withLock { slots[i] = v } }
    func fail(_ i: Int, _ e: Error) {
        lock.withLock { if error == nil || i < error!.0 { error = (i, e) } }
    }
    var firstError: Error? { lock.withLock { error?.1 } }
    func results() -> [T] { slots.map { $0! } }
}

/// A one-line progress display on stderr, drawn only when stderr is a terminal.
public final class Progress: @unchecked Sendable {
    private let total: Int
    private let label: String
    private var done = 0
    private let lock = Mutex()
    private let enabled: Bool

    public init(total: Int, label: String, quiet: Bool) {
        self.total = total
        self.label = label
        enabled = !quiet && isatty(2) == 1 && total > 0
    }

    func step() {
        guard enabled else { return }
        lock.withLock {
            done += 1
            let line = "\r\(label): \(done)/\(total) tensors"
            writeStderr(line)
            if done == total { writeStderr("\r" + String(repeating: " ", count: line.count) + "\r") }
        }
    }
}

/// Writes to file descriptor 2 directly (no shared FILE state, so safe from any thread).
public func writeStderr(_ s: String) {
    var bytes = Array(s.utf8)
    var off = 0
    while off < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + off, $0.count - off) }
        if n <= 0 { return }
        off += n
    }
}
