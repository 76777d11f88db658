import SafeTensors

/// Which permutation acts on which tensor axis: the whole architecture knowledge of weight
/// matching, as data (built in for MLP chains and transformer families, or read from a file).
///
/// An axis is one or more *segments* laid end to end (a fused QKV axis has three), each split
/// row-major into *levels* (heads, then dims inside a head). A level is either fixed or moved by a
/// *space*. A space name may hold placeholders `{k}`: the space then has one instance per source
/// index of level k of the same segment (the query heads inside KV group 3 of layer 0 are moved by
/// `layers.0.qgrp.3`). Applying the permutations to B is a gather: output slot j of a level takes
/// B's index perm[j], level by level from the outside in.
public struct PermutationSpec: Sendable, Equatable {
    public struct Level: Sendable, Equatable {
        /// The space template moving this level, nil when it stays in place.
        public var space: String?
        public var size: Int
        /// Why a built-in spec keeps this level in place (shown when a spec file moves it).
        public var why: String?
        public init(space: String?, size: Int, why: String? = nil) { self.space = space; self.size = size; self.why = why }
        public static func fixed(_ size: Int, why: String? = nil) -> Level { Level(space: nil, size: size, why: why) }
    }

    /// One axis: its segments, each a list of levels (outermost first). Nil axes stay in place.
    public struct Axis: Sendable, Equatable {
        public var segments: [[Level]]
        public init(segments: [[Level]]) { self.segments = segments }
        public init(_ levels: [Level]) { segments = [levels] }
        public var length: Int { segments.reduce(0) { $0 + $1.reduce(1) { $0 * $1.size } } }
        public var isFixed: Bool { segments.allSatisfy { $0.allSatisfy { $0.space == nil } } }
    }

    public struct TensorAxes: Sendable, Equatable {
        public var name: String
        public var axes: [Axis?]
        public init(name: String, axes: [Axis?]) { self.name = name; self.axes = axes }
    }

    /// What the spec describes (`mlp`, `llama`, `gpt2`, `bert`, or `file`).
    public var architecture: String
    /// Space templates and their sizes, in declaration order.
    public var spaces: [(name: String, size: Int)]
    public var tensors: [TensorAxes]
    /// Globs of tensors that pass through unchanged (buffers and other non-weights).
    public var fixed: [String]

    public init(architecture: String, spaces: [(name: String, size: Int)], tensors: [TensorAxes], fixed: [String] = []) {
        self.architecture = architecture
        self.spaces = spaces
        self.tensors = tensors
        self.fixed = fixed
    }

    public static func == (a: PermutationSpec, b: PermutationSpec) -> Bool {
        a.architecture == b.architecture && a.tensors == b.tensors && a.fixed == b.fixed
            && a.spaces.map(\.name) == b.spaces.map(\.name) && a.spaces.map(\.size) == b.spaces.map(\.size)
    }

    public func size(of template: String) -> Int? { spaces.first { $0.name == template }?.size }
    public func tensor(_ name: String) -> TensorAxes? { tensors.first { $0.name == name } }
}

// MARK: - Space templates

/// A space template split at its `{k}` placeholders, for fast instance naming.
struct SpaceTemplate: Sendable {
    let pieces: [String]      // literal text around the placeholders
    let levels: [Int]         // the level each placeholder refers to
    init(_ template: String) {
        var pieces: [String] = [], levels: [Int] = []
        var current = ""
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "{") {
            guard let close = rest[open...].firstIndex(of: "}"), let k = Int(rest[rest.index(after: open)..<close]) else { break }
            current += rest[..<open]
            pieces.append(current); current = ""
            levels.append(k)
            rest = rest[rest.index(after: close)...]
        }
        current += rest
        pieces.append(current)
        self.pieces = pieces; self.levels = levels
    }
    var isFamily: Bool { !levels.isEmpty }
    /// The instance name given the source indices of the outer levels.
    func instance(_ source: [Int]) -> String {
        var s = pieces[0]
        for (i, k) in levels.enumerated() { s += String(source[k]) + pieces[i + 1] }
        return s
    }
}

// MARK: - JSON form (the spec file format; YAML files are read into the same shape)

extension PermutationSpec {
    /// The spec in the file format `--spec` reads and `--print-spec` writes.
    public var json: JSONValue {
        func level(_ l: Level) -> JSONValue { l.space.map { .string($0) } ?? .int(l.size) }
        func axis(_ a: Axis?) -> JSONValue {
            guard let a, !a.isFixed else { return .null }
            if a.segments.count == 1 {
                let s = a.segments[0]
                if s.count == 1, let sp = s[0].space { return .string(sp) }
                return .array(s.map(level))
            }
            return .object([("concat", .array(a.segments.map { .array($0.map(level)) }))])
        }
        return .object([
            ("architecture", .string(architecture)),
            ("spaces", .object(spaces.map { ($0.name, .int($0.size)) })),
            ("tensors", .object(tensors.map { ($0.name, .array($0.axes.map(axis))) })),
            ("fixed", .array(fixed.map { .string($0) })),
        ])
    }

    /// Reads the file format. Structural mistakes name the file and the key.
    public static func parse(_ v: JSONValue, file: String) throws -> PermutationSpec {
        func bad(_ m: String, _ tensor: String? = nil) -> FormatError { FormatError(file: file, tensor: tensor, m) }
        guard case let .object(top) = v else { throw bad("a spec is an object with \"spaces\" and \"tensors\"") }
        for (k, _) in top where !["architecture", "spaces", "tensors", "fixed"].contains(k) {
            throw bad("unknown key '\(k)' (expected architecture, spaces, tensors, fixed)")
        }
        var spaces: [(name: String, size: Int)] = []
        guard case let .object(sp)? = v["spaces"] else { throw bad("needs a \"spaces\" object: space name -> size") }
        for (name, s) in sp {
            guard let n = s.uint64Value, n >= 1, n <= 1 << 30 else { throw bad("space '\(name)': the size must be a positive integer") }
            if spaces.contains(where: { $0.name == name }) { throw bad("space '\(name)' is declared twice") }
            spaces.append((name, Int(n)))
        }
        let sizes = Dictionary(spaces.map { ($0.name, $0.size) }, uniquingKeysWith: { a, _ in a })
        func level(_ l: JSONValue, _ tensor: String) throws -> Level {
            if let name = l.stringValue {
                guard let n = sizes[name] else { throw bad("uses space '\(name)', which \"spaces\" does not declare", tensor) }
                return Level(space: name, size: n)
            }
            guard let n = l.uint64Value, n >= 1 else { throw bad("a level is a space name or a positive integer (a fixed level's size)", tensor) }
            return .fixed(Int(n))
        }
        func segment(_ s: JSONValue, _ tensor: String) throws -> [Level] {
            guard case let .array(ls) = s, !ls.isEmpty else { throw bad("a segment is a non-empty list of levels", tensor) }
            return try ls.map { try level($0, tensor) }
        }
        var tensors: [TensorAxes] = []
        guard case let .object(ts)? = v["tensors"] else { throw bad("needs a \"tensors\" object: tensor name -> list of axes") }
        for (name, axesV) in ts {
            guard case let .array(axesJ) = axesV else { throw bad("the value is a list with one entry per axis", name) }
            if tensors.contains(where: { $0.name == name }) { throw bad("listed twice", name) }
            let axes: [Axis?] = try axesJ.map { a in
                switch a {
                case .null: return nil
                case .string: return Axis([try level(a, name)])
                case .array: return Axis(try segment(a, name))
                case let .object(o):
                    guard o.count == 1, o[0].0 == "concat", case let .array(segs) = o[0].1, !segs.isEmpty else {
                        throw bad("an axis object is {\"concat\": [segment, ...]}", name)
                    }
                    return Axis(segments: try segs.map { try segment($0, name) })
                default: throw bad("an axis is null, a space name, a list of levels or {\"concat\": ...}", name)
                }
            }
            tensors.append(TensorAxes(name: name, axes: axes))
        }
        var fixed: [String] = []
        if let f = v["fixed"] {
            guard case let .array(items) = f, items.allSatisfy({ $0.stringValue != nil }) else { throw bad("\"fixed\" is a list of tensor-name globs") }
            fixed = items.map { $0.stringValue! }
        }
        return PermutationSpec(architecture: v["architecture"]?.stringValue ?? "file", spaces: spaces, tensors: tensors, fixed: fixed)
    }
}
