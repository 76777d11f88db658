import SafeTensors

/// The permutations found by a match, with the spec they act through: what `--perm-out` writes and
/// `--apply` reads, so a fine-tune of B (same architecture) can be re-indexed the same way.
public struct PermutationFile: Sendable {
    public static let format = "wtool-permutations"
    public var spec: PermutationSpec
    public var perms: [String: [Int]]

    public init(spec: PermutationSpec, perms: [String: [Int]]) { self.spec = spec; self.perms = perms }

    public var json: JSONValue {
        .object([
            ("format", .string(PermutationFile.format)), ("version", .int(1)),
            ("spec", spec.json),
            ("permutations", .object(perms.keys.sorted().map { k in (k, .array(perms[k]!.map { .int($0) })) })),
        ])
    }

    public func write(to path: String) throws {
        try AtomicFile.write(Array((json.compact() + "\n").utf8), to: path)
    }

    public static func read(_ path: String) throws -> PermutationFile {
        let v: JSONValue
        do { v = try JSONParser.parse(try FileSystem.readAll(path)) } catch let e as JSONParseError {
            throw FormatError(file: path, "invalid JSON: \(e)")
        }
        guard v["format"]?.stringValue == format, let specV = v["spec"], case let .object(ps)? = v["permutations"] else {
            throw FormatError(file: path, "not a permutation file (format \"\(format)\" with \"spec\" and \"permutations\"), as --perm-out writes")
        }
        let spec = try PermutationSpec.parse(specV, file: path)
        var perms: [String: [Int]] = [:]
        for (name, arr) in ps {
            guard case let .array(items) = arr else { throw FormatError(file: path, "permutation '\(name)' is not a list") }
            let p = items.compactMap { $0.uint64Value.flatMap { Int(exactly: $0) } }
            guard p.count == items.count, Set(p) == Set(0..<p.count) else {
                throw FormatError(file: path, "permutation '\(name)' is not a permutation of 0..<\(items.count)")
            }
            perms[name] = p
        }
        return PermutationFile(spec: spec, perms: perms)
    }

    /// Checks the permutations against the spec's instances: known names, right lengths.
    func check(_ bound: BoundSpec, path: String) throws {
        let sizes = Dictionary(uniqueKeysWithValues: bound.instances.map { ($0.name, $0.size) })
        for (name, p) in perms {
            guard let n = sizes[name] else { throw FormatError(file: path, "permutation '\(name)' names no space of the spec") }
            guard p.count == n else { throw FormatError(file: path, "permutation '\(name)' has \(p.count) entries, the space has \(n)") }
        }
    }
}
