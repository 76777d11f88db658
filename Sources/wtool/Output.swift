import Surgery
#if canImport(Glibc)
import Glibc
#endif

/// The human summary goes to stderr (stdout stays for data a script may read).
func note(_ line: String, quiet: Bool) {
    guard !quiet else { return }
    writeStderr(escapedForTerminal(line) + "\n")
}

/// Names from strangers' files (tensor names, metadata, paths) may hold control characters:
/// escape sequences that would rewrite the terminal, or newlines that would split a one-line
/// error. They are shown escaped, \u{1B} style; everything else is kept as it is.
func escapedForTerminal(_ s: String) -> String {
    // Fast path: no byte that can start a control character (C0, DEL, the C1 lead byte 0xC2, the
    // U+2028/2029 lead byte 0xE2) means nothing to escape.
    if !s.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == 0xC2 || $0 == 0xE2 }) { return s }
    var out = ""
    for u in s.unicodeScalars {
        if u.value < 0x20 || (0x7F...0x9F).contains(u.value) || u.value == 0x2028 || u.value == 0x2029 {
            out += "\\u{" + String(u.value, radix: 16, uppercase: true) + "}"
        } else {
            out.unicodeScalars.append(u)
        }
    }
    return out
}

/// Pads for aligned columns.
func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
}
