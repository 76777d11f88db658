#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CSystem

/// A folder output built whole under a temporary sibling name and published in one step, so that
/// after a crash, a kill or a full disk the output's name holds the old complete folder, the new
/// complete folder, or nothing: never a mix (a Makefile trusts that a target which exists is
/// complete).
///
/// Writers write into `staging` (`PARENT/.NAME.wtool-tmp.PID.XXXXXX`); `commit` fsyncs it and
/// renames it to the output's name, or, when that folder exists, swaps the two atomically
/// (renameat2 RENAME_EXCHANGE; where the filesystem lacks it, the old folder is first renamed
/// aside) and removes the old one. A staging folder left by a kill is recognised by its name and
/// removed by the next run that writes into the same parent (only when its PID is not alive).
public final class OutputTransaction: @unchecked Sendable {
    public let finalPath: String
    public let staging: String
    private var finished = false

    /// The marker in every temporary name wtool creates (files and folders alike).
    public static let marker = ".wtool-tmp."

    /// A temporary sibling name for `path`: `.NAME.wtool-tmp.PID.XXXXXX` (a mkstemp template).
    public static func temporaryTemplate(for path: String) -> String {
        FileSystem.join(FileSystem.dirname(path), "." + FileSystem.basename(path) + marker + String(getpid()) + ".XXXXXX")
    }

    /// Files wtool would write into a model or adapter folder: an existing folder holding one of
    /// them (or nothing) may be replaced; any other folder is refused, never deleted.
    static let modelFiles: Set<String> = ["model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                                          "adapter_config.json", "wtool-report.json", "config.json"]

    public init(folder given: String) throws {
        // `out/` names the folder `out`: the staging sibling and the rename need the bare name.
        var path = given
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        let base = FileSystem.basename(path)
        guard !path.isEmpty, path != "/", base != ".", base != ".." else {
            throw FormatError(file: given, "name the output folder (wtool builds it beside its final name, so not '.', '..' or '/')")
        }
        finalPath = path
        let parent = FileSystem.dirname(path)
        guard FileSystem.kind(parent) == .directory else { throw FormatError(file: path, "the folder '\(parent)' does not exist") }
        switch FileSystem.kind(path) {
        case .missing: break
        case .directory:
            let names = FileSystem.list(path).filter { !$0.hasPrefix(".") }
            let known = names.contains { OutputTransaction.modelFiles.contains($0) || ($0.hasPrefix("model-") && $0.hasSuffix(".safetensors")) }
            guard names.isEmpty || known else {
                throw FormatError(file: path, "exists and is not a model folder; wtool replaces the whole output folder, so choose another name or remove it")
            }
        default:
            throw FormatError(file: path, "exists and is not a folder")
        }
        OutputTransaction.removeStaleTemporaries(in: parent)
        var tmpl = Array(OutputTransaction.temporaryTemplate(for: path).utf8CString)
        guard mkdtemp(&tmpl) != nil else {
            throw FormatError(file: path, "cannot create a temporary folder beside it: \(String(cString: strerror(errno)))")
        }
        staging = String(decoding: tmpl.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        chmod(staging, 0o755)
        _ = wt_register_temporary_tree(staging)
    }

    /// The published name of a path inside the staging folder (for reports and messages).
    public func published(_ p: String) -> String {
        p.hasPrefix(staging) ? finalPath + p.dropFirst(staging.count) : p
    }

    /// Publishes the staging folder under the output's name.
    public func commit() throws {
        guard !finished else { return }
        defer { finished = true }
        syncDirectory(staging)
        if rename(staging, finalPath) != 0 {
            let e = errno
            guard e == EEXIST || e == ENOTEMPTY || e == EISDIR, FileSystem.kind(finalPath) == .directory else {
                abort()
                throw FormatError(file: finalPath, "cannot rename into place: \(String(cString: strerror(e)))")
            }
            if wt_exchange(staging, finalPath) != 0 {
                // No RENAME_EXCHANGE here: rename the old folder aside, then the new one in. A kill
                // between the two renames leaves the name empty for a moment, never mixed.
                var aside = Array(OutputTransaction.temporaryTemplate(for: finalPath).utf8CString)
                guard mkdtemp(&aside) != nil else { abort(); throw FormatError(file: finalPath, "cannot rename the old folder aside") }
                let asidePath = String(decoding: aside.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
                rmdir(asidePath)
                guard rename(finalPath, asidePath) == 0 else {
                    abort()
                    throw FormatError(file: finalPath, "cannot rename the old folder aside: \(String(cString: strerror(errno)))")
                }
                guard rename(staging, finalPath) == 0 else {
                    let e2 = errno
                    rename(asidePath, finalPath)
                    abort()
                    throw FormatError(file: finalPath, "cannot rename into place: \(String(cString: strerror(e2)))")
                }
                _ = wt_remove_tree(asidePath)
            } else {
                // `staging` now holds the old folder.
                _ = wt_remove_tree(staging)
            }
        }
        wt_unregister_temporary(staging)
        syncDirectory(FileSystem.dirname(finalPath))
    }

    /// Removes the staging folder and everything in it.
    public func abort() {
        guard !finished else { return }
        finished = true
        _ = wt_remove_tree(staging)
        wt_unregister_temporary(staging)
    }

    deinit { abort() }

    /// Removes wtool temporaries (files or folders, `.NAME.wtool-tmp.PID.XXXXXX`) in `parent` whose
    /// process is gone: what a killed run left behind.
    public static func removeStaleTemporaries(in parent: String) {
        let m = Array(marker.utf8)
        for name in FileSystem.list(parent) where name.hasPrefix(".") {
            // `.NAME` + marker + `PID.XXXXXX`: the PID is the digits after the last marker.
            let b = Array(name.utf8)
            guard b.count > m.count, let at = (0...(b.count - m.count)).last(where: { Array(b[$0..<($0 + m.count)]) == m }) else { continue }
            let rest = b[(at + m.count)...]
            guard let dot = rest.firstIndex(of: UInt8(ascii: ".")), let pid = Int32(String(decoding: rest[..<dot], as: UTF8.self)), pid > 0 else { continue }
            if pid == getpid() || wt_process_alive(pid) != 0 { continue }
            _ = wt_remove_tree(FileSystem.join(parent, name))
        }
    }
}
