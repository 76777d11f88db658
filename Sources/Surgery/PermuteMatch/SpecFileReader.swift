import SafeTensors
import Yams

/// Reads a spec file: JSON, or YAML (`.yaml`/`.yml`) read into the same shape with key order kept.
public enum SpecFileReader {
    public static func load(_ path: String) throws -> PermutationSpec {
        let bytes = try FileSystem.readAll(path)
        let value: JSONValue
        if path.hasSuffix(".yaml") || path.hasSuffix(".yml") {
            guard let text = String(validating: bytes, as: UTF8.self) else { throw FormatError(file: path, "is not UTF-8 text") }
            let node: Node?
            do { node = try Yams.compose(yaml: text) } catch { throw FormatError(file: path, "invalid YAML: \(error)") }
            guard let node else { throw FormatError(file: path, "is empty") }
            value = json(node)
        } else {
            do { value = try JSONParser.parse(bytes) } catch { throw FormatError(file: path, "invalid JSON: \(error)") }
        }
        return try PermutationSpec.parse(value, file: path)
    }

    private static func json(_ n: Node) -> JSONValue {
        if let m = n.mapping { return .object(m.map { ($0.key.string ?? "", json($0.value)) }) }
        if let s = n.sequence { return .array(s.map(json)) }
        if n.null != nil { return .null }
        if let i = n.int { return .int(i) }
        if let b = n.bool { return .bool(b) }
        return .string(n.string ?? "")
    }
}
