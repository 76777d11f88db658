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
    public var warnings: [String] = []
    /// The folder relative model paths resolve against (the recipe's folder).
    public var folder: String

    public init(method: String, baseModel: String?, models: [Source], parameters: [String: ParameterSetting] = [:], folder: String = ".") {
        self.method = method; self.baseModel = baseModel; self.models = models; self.slices = nil
        self.parameters = parameters; self.folder = folder
    }

    /// Parses a YAML recipe. Structural errors are usage errors naming the key.
    public static func load(yaml text: String, path: String) throws -> MergeRecipe {
        let any: Any?
        do { any = try Yams.load(yaml: text) } catch {
            throw UsageError("\(path): invalid YAML: \(error)")
        }
        guard let top = any as? [String: Any] else { throw UsageError("\(path): the recipe must be a YAML mapping") }
        let known: Set<String> = ["merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype",
                                  "tokenizer_source", "tokenizer", "chat_template", "name", "modules"]
        var warnings = top.keys.filter { !known.contains($0) }.sorted().map { "\(path): unknown key '\($0)' ignored" }
        for k in ["tokenizer_source", "tokenizer", "chat_template"] where top[k] != nil {
            warnings.append("\(path): '\(k)' is not supported: tokenizer files are copied from the base model")
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
        recipe.dtype = try dtype(top["dtype"], "\(path): dtype")
        recipe.outDType = try dtype(top["out_dtype"], "\(path): out_dtype")
        return recipe
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

    /// Every model path the recipe names (base first), resolved against the recipe's folder.
    public var modelPaths: [String] {
        var names: [String] = []
        if let baseModel { names.append(baseModel) }
        for s in (models ?? []) + (slices ?? []).flatMap(\.sources) where !names.contains(s.model) { names.append(s.model) }
        return names
    }

    /// A model reference as a local path. Hub ids, revisions and LoRA references are refused:
    /// wtool never downloads.
    public func resolve(_ model: String) throws -> String {
        if model.contains("+") && FileSystem.kind(model) == .missing {
            throw UsageError("model '\(model)': LoRA references (model+lora) are not supported; merge the adapter into its base first")
        }
        let p = model.hasPrefix("/") ? model : FileSystem.join(folder, model)
        guard FileSystem.kind(p) != .missing else {
            throw UsageError("model '\(model)': no such local file or folder (\(p)); wtool does not download models")
        }
        return p
    }
}
