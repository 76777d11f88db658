import Surgery
#if canImport(Glibc)
import Glibc
#endif

/// The human summary goes to stderr (stdout stays for data a script may read).
func note(_ line: String, quiet: Bool) {
    guard !quiet else { return }
    writeStderr(line + "\n")
}

/// Pads for aligned columns.
func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}
