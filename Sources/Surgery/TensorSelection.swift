#if canImport(Glibc)
import Glibc
#endif

/// `--include` / `--exclude` globs (shell patterns, `*` also crosses dots): a tensor is selected
/// when it matches some include pattern (or there are none) and no exclude pattern.
public struct TensorSelection: Sendable {
    public let include: [String]
    public let exclude: [String]
    public init(include: [String] = [], exclude: [String] = []) { self.include = include; self.exclude = exclude }

    public func selects(_ name: String) -> Bool {
        (include.isEmpty || include.contains { glob($0, name) }) && !exclude.contains { glob($0, name) }
    }

    private func glob(_ pattern: String, _ name: String) -> Bool { fnmatch(pattern, name, 0) == 0 }

    /// Patterns that select nothing: almost always a typo, reported as a warning.
    public func unusedPatterns(in names: [String]) -> [String] {
        (include + exclude).filter { p in !names.contains { glob(p, $0) } }
    }
}
