import Yams
import SafeTensors

/// A merge as mergekit's YAML describes it (the subset of `MergeConfiguration` that acts on
/// weights), or as the command-line flags build it.
public struct MergeRecipe: Sendable {
    public struct Source: Sendable {
        public var model: String
        /// Half-open layer range [start, end) for slices; nil for the `models:` form.
        public var layerRange: (Int, Int)?
        public var parameters: [String: ParameterSetting]
        public init(model: String, layerRange: (Int, Int)? = nil, parameters: [String: ParameterSetting] = [:]) {
            self.model = model; self.layerRange = layerRange; self.parameters = parameters
        }
    }
    public struct Slice: Sendable {
        public var sources: [Source]
        public var parameters: [String: ParameterSetting]
    }

    public var method: String
    public var baseModel: String?
    /// `models:` form; nil when the recipe uses `slices:`.
    public var models: [Source]?
    public var slices: [Slice]?
    public var parameters: [String: ParameterSetting]
    /// mergekit's load/compute dtype: wtool always computes in f32, so this only sets the output
    /// dtype when `out_dtype` is absent (what mergekit's output would have).
    public var dtype: DType?
    public var outDType: DType?
    /// `tokenizer_source`: nil or "base" (the reference model's tokenizer files), or a model
    /// reference whose tokenizer files the output gets.
    public var tokenizerSource: String?
    public var warnings: [String] = []
    /// The recipe's folder: where relative model paths are looked for when the current directory
    /// has nothing under that name (see `resolve`).
    public var folder: String

    public init(method: String, baseModel: String?, models: [Source], parameters: [String: ParameterSetting] = [:], folder: String = ".") {
        self.method = method; self.baseModel = baseModel; self.models = models; self.slices = nil
        self.parameters = parameters; self.folder = folder
    }

    /// Parses a YAML recipe. Structural errors are usage errors naming the key.
    public static func load(yaml text: String, path: String) throws -> MergeRecipe {
        let any: Any?
        do {
            // Composed first and checked, so that Yams' constructor (which traps on a mapping key
            // that is not a scalar) and alias expansion (a "billion laughs" file) see only sane trees.
            let node = try Yams.compose(yaml: text)
            if let node { try checkShape(node, path: path) }
            any = node.map { Constructor.default.any(from: $0) }
        } catch let e as UsageError {
            throw e
        } catch {
            throw UsageError("\(path): invalid YAML: \(error)")
        }
        guard let top = any as? [String: Any] else { throw UsageError("\(path): the recipe must be a YAML mapping") }
        let known: Set<String> = ["merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype",
                                  "tokenizer_source", "tokenizer", "chat_template", "name", "modules"]
        var warnings = top.keys.filter { !known.contains($0) }.sorted().map { "\(path): unknown key '\($0)' ignored" }
        if top["chat_template"] != nil {
            warnings.append("\(path): 'chat_template' is not supported: the tokenizer files (and their template) are copied unchanged")
        }
        if top["modules"] != nil { throw UsageError("\(path): 'modules' (multi-module architectures) is not supported") }
        guard let method = top["merge_method"] as? String else { throw UsageError("\(path): 'merge_method' is required") }
        let folder = FileSystem.dirname(path)
        var recipe = MergeRecipe(method: method, baseModel: try modelRef(top["base_model"], "\(path): base_model"), models: [],
                                 parameters: try params(top["parameters"], "\(path): parameters"), folder: folder)
        recipe.warnings = warnings
        let hasModels = top["models"] != nil, hasSlices = top["slices"] != nil
        guard hasModels != hasSlices else { throw UsageError("\(path): give exactly one of 'models' and 'slices'") }
        if hasModels {
            guard let list = top["models"] as? [Any] else { throw UsageError("\(path): 'models' must be a list") }
            recipe.models = try list.enumerated().map { try source($1, "\(path): models[\($0)]", slice: false, warnings: &recipe.warnings) }
        } else {
            guard let list = top["slices"] as? [Any] else { throw UsageError("\(path): 'slices' must be a list") }
            recipe.models = nil
            recipe.slices = try list.enumerated().map { i, s in
                guard let d = s as? [String: Any], let srcs = d["sources"] as? [Any] else {
                    throw UsageError("\(path): slices[\(i)] needs a 'sources' list")
                }
                for k in d.keys where !["sources", "parameters", "base_model", "residual_weight"].contains(k) {
                    recipe.warnings.append("\(path): slices[\(i)]: unknown key '\(k)' ignored")
                }
                return Slice(sources: try srcs.enumerated().map { try source($1, "\(path): slices[\(i)].sources[\($0)]", slice: true, warnings: &recipe.warnings) },
                             parameters: try params(d["parameters"], "\(path): slices[\(i)].parameters"))
            }
        }
        recipe.tokenizerSource = try tokenizerSource(top, path)
        recipe.dtype = try dtype(top["dtype"], "\(path): dtype")
        recipe.outDType = try dtype(top["out_dtype"], "\(path): out_dtype")
        return recipe
    }

    /// mergekit's `tokenizer_source` (or `tokenizer: {source: ...}`): `base`, or a model whose
    /// tokenizer files the output gets. `union` (and any other vocabulary surgery) would need the
    /// embeddings re-indexed: refused rather than ignored.
    private static func tokenizerSource(_ top: [String: Any], _ path: String) throws -> String? {
        var value: Any? = top["tokenizer_source"]
        if let t = top["tokenizer"] {
            guard value == nil else { throw UsageError("\(path): give 'tokenizer_source' or 'tokenizer', not both") }
            guard let d = t as? [String: Any] else { throw UsageError("\(path): tokenizer: expected a mapping with 'source'") }
            if let other = d.keys.filter({ $0 != "source" }).sorted().first {
                throw UsageError("\(path): tokenizer.\(other) is not supported (wtool does not change vocabularies)")
            }
            value = d["source"]
        }
        guard let value else { return nil }
        guard let s = try? modelRef(value, "") else { throw UsageError("\(path): tokenizer_source: expected 'base' or a model path") }
        if s == "union" {
            throw UsageError("\(path): tokenizer_source: union is not supported (it re-indexes the embeddings); use base or a model path")
        }
        return s
    }

    /// Mapping keys must be scalars, and the tree (aliases expanded) at most a million nodes.
    static func checkShape(_ root: Node, path: String) throws {
        var budget = 1_000_000
        func walk(_ n: Node, depth: Int) throws {
            budget -= 1
            guard budget > 0 else { throw UsageError("\(path): the recipe expands to more than a million YAML nodes") }
            guard depth < 256 else { throw UsageError("\(path): YAML nested too deep") }
            switch n {
            case .scalar: break
            case let .sequence(seq): for v in seq { try walk(v, depth: depth + 1) }
            case let .mapping(map):
                for (k, v) in map {
                    guard k.scalar != nil else { throw UsageError("\(path): a mapping key must be a plain name, not a list or a mapping") }
                    try walk(v, depth: depth + 1)
                }
            case .alias: break   // compose resolves aliases to the nodes they name
            }
        }
        try walk(root, depth: 0)
    }

    private static func modelRef(_ any: Any?, _ where_: String) throws -> String? {
        guard let any else { return nil }
        if let s = any as? String { return s }
        if let d = any as? [String: Any], let m = d["model"] {
            if let s = m as? String { return s }
            if let md = m as? [String: Any], let p = md["path"] as? String { return p }
        }
        throw UsageError("\(where_): expected a model path")
    }

    private static func source(_ any: Any, _ where_: String, slice: Bool, warnings: inout [String]) throws -> Source {
        if let s = any as? String, !slice { return Source(model: s) }
        guard let d = any as? [String: Any] else { throw UsageError("\(where_): expected {model, parameters}") }
        guard let model = try modelRef(d["model"], where_ + ".model") else { throw UsageError("\(where_): 'model' is required") }
        for k in d.keys where !["model", "parameters", "layer_range"].contains(k) {
            warnings.append("\(where_): unknown key '\(k)' ignored")
        }
        var range: (Int, Int)? = nil
        if let r = d["layer_range"] {
            guard slice else { throw UsageError("\(where_): 'layer_range' belongs in slices") }
            guard let l = r as? [Int], l.count == 2, l[0] >= 0, l[1] > l[0] else {
                throw UsageError("\(where_): layer_range must be [start, end) with 0 <= start < end")
            }
            range = (l[0], l[1])
        } else if slice {
            throw UsageError("\(where_): a slice source needs 'layer_range'")
        }
        return Source(model: model, layerRange: range, parameters: try params(d["parameters"], where_ + ".parameters"))
    }

    private static func params(_ any: Any?, _ where_: String) throws -> [String: ParameterSetting] {
        guard let any else { return [:] }
        guard let d = any as? [String: Any] else { throw UsageError("\(where_): expected a mapping of parameters") }
        var out: [String: ParameterSetting] = [:]
        for (k, v) in d { out[k] = try ParameterSetting.parse(v, path: "\(where_).\(k)") }
        return out
    }

    private static func dtype(_ any: Any?, _ where_: String) throws -> DType? {
        guard let any else { return nil }
        guard let s = any as? String else { throw UsageError("\(where_): expected a dtype name") }
        let name = s.hasPrefix("torch.") ? String(s.dropFirst(6)) : s
        guard let d = DType(userName: name), d.isFloatingPoint else {
            throw UsageError("\(where_): unknown dtype '\(s)' (use float32, bfloat16 or float16)")
        }
        return d
    }

    /// Where a model reference was found (reported, and printed by `--dry-run`).
    public struct Resolved: Sendable {
        public let reference: String
        public let path: String
        /// "absolute", "current directory" (mergekit's rule) or "recipe folder" (the fallback).
        public let against: String
        public let warning: String?
    }

    /// A model reference as a local path, resolved as mergekit resolves it: mergekit hands the
    /// string to the Hugging Face loader, so a relative path means the current directory. Only
    /// when nothing is there does wtool try the recipe's folder (a recipe that names its models
    /// beside itself then runs from anywhere); when both exist and are different models, the
    /// current directory's wins, with a warning. Hub ids, revisions and LoRA references are
    /// refused: wtool never downloads.
    public func resolve(_ model: String) throws -> Resolved {
        if model.hasPrefix("/") {
            guard FileSystem.kind(model) != .missing else {
                throw UsageError("model '\(model)': no such local file or folder; wtool does not download models")
            }
            return Resolved(reference: model, path: model, against: "absolute", warning: nil)
        }
        let inRecipeFolder = FileSystem.join(folder, model)
        let here = FileSystem.kind(model) != .missing, there = FileSystem.kind(inRecipeFolder) != .missing
        if here {
            var warning: String? = nil
            if there, let a = FileSystem.realPath(model), let b = FileSystem.realPath(inRecipeFolder), a != b {
                warning = "model '\(model)' exists both in the current directory and beside the recipe (\(inRecipeFolder)); "
                    + "using the current directory's, as mergekit does"
            }
            return Resolved(reference: model, path: model, against: "current directory", warning: warning)
        }
        if there { return Resolved(reference: model, path: inRecipeFolder, against: "recipe folder", warning: nil) }
        if model.contains("+") {
            throw UsageError("model '\(model)': LoRA references (model+lora) are not supported; merge the adapter into its base first")
        }
        let tried = folder == "." ? "" : " (nor \(inRecipeFolder))"
        throw UsageError("model '\(model)': no such local file or folder in the current directory\(tried); wtool does not download models")
    }
}
