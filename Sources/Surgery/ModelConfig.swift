import SafeTensors

/// A Hugging Face `config.json`, read in either transformers layout and written back in the
/// layout it came in. transformers 4 writes `torch_dtype`, `rope_theta` and `rope_scaling`;
/// transformers 5 writes `dtype` and `rope_parameters` (`rope_theta`, `rope_type` and the scaling
/// fields in one object). Commands ask this type, never the raw keys, so neither layout falls
/// back to a default silently; and every command that changes what the weights are (dtype,
/// sizes, layer count, quantization) writes its change here.
public struct ModelConfig: Sendable {
    public let path: String
    public private(set) var members: [(String, JSONValue)]

    public init(path: String) throws {
        let value: JSONValue
        do { value = try JSONParser.parse(try FileSystem.readAll(path)) } catch let e as JSONParseError {
            throw FormatError(file: path, "invalid JSON: \(e)")
        }
        guard case let .object(m) = value else { throw FormatError(file: path, "not a JSON object") }
        self.path = path
        members = m
    }

    /// The config.json of a checkpoint's folder, if it has one.
    public static func of(_ c: Checkpoint) throws -> ModelConfig? {
        guard let folder = c.folder else { return nil }
        let p = FileSystem.join(folder, "config.json")
        return FileSystem.kind(p) == .file ? try ModelConfig(path: p) : nil
    }

    public subscript(key: String) -> JSONValue? {
        guard let v = members.last(where: { $0.0 == key })?.1, v != .null else { return nil }
        return v
    }

    public var json: JSONValue { .object(members) }

    /// A non-negative integer value (nil when absent or null); anything else is an error naming the key.
    public func int(_ key: String) throws -> Int? {
        guard let v = self[key] else { return nil }
        guard let d = v.doubleValue, d >= 0, d == d.rounded(), d < 1e15 else {
            throw FormatError(file: path, "'\(key)' must be a non-negative integer, not \(v.compact())")
        }
        return Int(d)
    }

    /// An integer llama.cpp, a spec or a rewrite needs: absent is an error naming the key.
    public func requiredInt(_ key: String, for purpose: String) throws -> Int {
        guard let v = try int(key) else { throw FormatError(file: path, "needs '\(key)' \(purpose)") }
        return v
    }

    public func double(_ key: String) throws -> Double? {
        guard let v = self[key] else { return nil }
        guard let d = v.doubleValue else { throw FormatError(file: path, "'\(key)' must be a number, not \(v.compact())") }
        return d
    }

    public func string(_ key: String) -> String? { self[key]?.stringValue }

    /// transformers 5's layout: `dtype` or `rope_parameters` present, or a 5.x `transformers_version`.
    public var isTransformers5: Bool {
        if self["dtype"] != nil || self["rope_parameters"] != nil { return true }
        if self["torch_dtype"] != nil || self["rope_theta"] != nil || self["rope_scaling"] != nil { return false }
        return (string("transformers_version")?.split(separator: ".").first.flatMap { Int($0) } ?? 4) >= 5
    }

    // MARK: rope

    /// RoPE's base frequency: `rope_parameters.rope_theta` (transformers 5) or `rope_theta` (4).
    public func ropeTheta() throws -> Double? {
        if let p = self["rope_parameters"] {
            if let t = p["rope_theta"], t != .null {
                guard let d = t.doubleValue else { throw FormatError(file: path, "'rope_parameters.rope_theta' must be a number") }
                return d
            }
        }
        return try double("rope_theta")
    }

    /// RoPE scaling as one object (`rope_type`/`type`, `factor`, ...), whichever layout; nil when
    /// absent or the default (unscaled) type.
    public var ropeScaling: [(String, JSONValue)]? {
        let raw: JSONValue? = self["rope_parameters"] ?? self["rope_scaling"]
        guard let obj = raw?.objectValue else { return nil }
        let fields = obj.filter { $0.0 != "rope_theta" && $0.0 != "partial_rotary_factor" }
        let type = (fields.first { $0.0 == "rope_type" } ?? fields.first { $0.0 == "type" })?.1.stringValue
        if type == nil || type == "default" { return nil }
        return fields
    }

    // MARK: writing

    public mutating func set(_ key: String, _ value: JSONValue) {
        if let i = members.lastIndex(where: { $0.0 == key }) { members[i].1 = value } else { members.append((key, value)) }
    }

    public mutating func remove(_ key: String) { members.removeAll { $0.0 == key } }

    /// The dtype the weights are stored in, under the key(s) the input's layout uses.
    public mutating func setDType(_ d: DType) {
        guard let name = ModelConfig.torchNames[d] else { return }
        let hasOld = self["torch_dtype"] != nil, hasNew = self["dtype"] != nil
        if hasOld { set("torch_dtype", .string(name)) }
        if hasNew { set("dtype", .string(name)) }
        if !hasOld && !hasNew { set(isTransformers5 ? "dtype" : "torch_dtype", .string(name)) }
    }

    static let torchNames: [DType: String] = [.F32: "float32", .F16: "float16", .BF16: "bfloat16", .F64: "float64",
                                              .F8_E4M3: "float8_e4m3fn", .F8_E5M2: "float8_e5m2"]

    public func bytes() -> [UInt8] { Array((json.pretty(indent: 2, sortKeys: true) + "\n").utf8) }

    public func write(to path: String) throws { try AtomicFile.write(bytes(), to: path) }

    /// The dtype a checkpoint's weights are, as transformers records it: the floating-point dtype
    /// holding the most bytes (nil: no float tensor).
    public static func weightsDType(_ outputs: [OutputTensor]) -> DType? {
        var bytes: [DType: Int] = [:]
        for o in outputs where o.dtype.isFloatingPoint { bytes[o.dtype, default: 0] += o.byteCount }
        return bytes.max { $0.value < $1.value || ($0.value == $1.value && $0.key.rawValue > $1.key.rawValue) }?.key
    }
}
