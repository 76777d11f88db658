import SafeTensors

/// The merge, planned before any tensor is computed: every output tensor with the input tensor of
/// each model, its layer position and its resolved parameters. Every user error surfaces here.
public struct MergePlan: Sendable {
    public struct Input: Sendable {
        public let model: Int          // index into `checkpoints`
        public let tensor: String      // input tensor name (differs from the output's in slices)
    }
    public struct Item: Sendable {
        public let output: String
        public let shape: [UInt64]
        public let dtype: DType
        public let base: Input?
        public let models: [Input]
        /// false: copied from the base (or `models[0]`) unchanged: not a float tensor, or excluded.
        public let merge: Bool
        /// Left out by `--include`/`--exclude`.
        public let excluded: Bool
        public let global: [String: ParamValue]
        public let perModel: [[String: ParamValue]]
        public let t: Double
    }

    public let method: any MergeMethod
    public let checkpoints: [Checkpoint]
    public let modelPaths: [String]
    /// How each model reference of the recipe was resolved, in the order they were opened.
    public let resolutions: [MergeRecipe.Resolved]
    /// The folder whose tokenizer files the output gets, when `tokenizer_source` names a model
    /// other than the base (nil: the reference model's, like every other auxiliary file).
    public let tokenizerFolder: String?
    /// The checkpoint whose config and tokenizer files the output gets.
    public let reference: Int
    public let items: [Item]
    public let warnings: [String]
    /// Output layer count when slices changed it.
    public let layerCount: Int?

    struct SourceRef {
        let model: Int
        let range: (Int, Int)?
        let params: [String: ParameterSetting]
    }

    /// - Parameter selection: `--include`/`--exclude`; tensors it leaves out are copied unchanged
    ///   from the base (or the first model) instead of merged.
    public init(recipe: MergeRecipe, outDType: DType?, selection: TensorSelection = TensorSelection()) throws {
        let method = try MergeMethods.named(recipe.method)
        self.method = method
        var warnings = recipe.warnings
        try MergePlan.checkParameterNames(recipe, method)

        // Open every model once (validating every file); paths resolve as mergekit's do.
        var paths: [String] = [], cps: [Checkpoint] = [], resolutions: [MergeRecipe.Resolved] = []
        func open(_ m: String) throws -> Int {
            let r = try recipe.resolve(m)
            if !resolutions.contains(where: { $0.reference == m }) {
                resolutions.append(r)
                if let w = r.warning { warnings.append(w) }
            }
            let p = r.path
            let real = FileSystem.realPath(p) ?? p
            if let i = paths.firstIndex(of: real) { return i }
            paths.append(real)
            let c = try Checkpoint(path: p)
            warnings += c.warnings
            cps.append(c)
            return cps.count - 1
        }
        let baseIndex = try recipe.baseModel.map(open)
        let slices: [MergeRecipe.Slice] = recipe.slices ?? [MergeRecipe.Slice(sources: recipe.models ?? [], parameters: [:])]
        var sliceRefs: [[SourceRef]] = []
        for s in slices {
            sliceRefs.append(try s.sources.map { SourceRef(model: try open($0.model), range: $0.layerRange, params: $0.parameters) })
        }
        checkpoints = cps
        modelPaths = paths
        if let ts = recipe.tokenizerSource, ts != "base" {
            let r = try recipe.resolve(ts)
            guard FileSystem.kind(r.path) == .directory else {
                throw UsageError("tokenizer_source '\(ts)': \(r.path) is not a model folder")
            }
            if !resolutions.contains(where: { $0.reference == ts }) {
                resolutions.append(r)
                if let w = r.warning { warnings.append(w) }
            }
            tokenizerFolder = r.path
        } else {
            tokenizerFolder = nil
        }
        self.resolutions = resolutions

        // Which sources are merged, and where the base comes from.
        var mergedRefs: [[SourceRef]] = []
        for (k, refs) in sliceRefs.enumerated() {
            var merged = refs
            switch method.base {
            case .required, .optional:
                if method.base == .required && baseIndex == nil { throw UsageError("\(method.name) needs base_model (--base)") }
                merged = refs.filter { $0.model != baseIndex }
                if let b = baseIndex, recipe.slices != nil, !refs.contains(where: { $0.model == b }) {
                    throw UsageError("slices[\(k)]: the base model must be one of the slice's sources for \(method.name)")
                }
            case .asInput:
                if let b = baseIndex, !refs.contains(where: { $0.model == b }) {
                    if method.name == "karcher" {
                        merged.append(SourceRef(model: b, range: refs.first?.range, params: [:]))  // mergekit averages it in
                    } else {
                        warnings.append("\(method.name) does not use base_model unless it is listed among the models; it is ignored")
                    }
                }
            case .none:
                if baseIndex != nil { warnings.append("\(method.name) does not use base_model; it is ignored") }
            }
            guard method.modelCount.contains(merged.count) else {
                let want = method.modelCount.upperBound == Int.max ? "at least \(method.modelCount.lowerBound)"
                    : (method.modelCount.count == 1 ? "exactly \(method.modelCount.lowerBound)" : "\(method.modelCount.lowerBound) to \(method.modelCount.upperBound)")
                throw UsageError("\(method.name) merges \(want) model(s) besides the base, this recipe gives \(merged.count)" + (recipe.slices != nil ? " in slices[\(k)]" : ""))
            }
            mergedRefs.append(merged)
        }
        let usesBase = method.base == .required || (method.base == .optional && baseIndex != nil)
        let refModel = baseIndex ?? mergedRefs[0][0].model
        reference = refModel

        // Output tensors in model order: pre-layer weights, layers, post-layer weights.
        let ref = cps[refModel]
        let layered = ref.entries.compactMap { LayerName($0.name) }
        let templates = uniqued(layered.map(\.template))
        let refLayers = (layered.map(\.index).max() ?? -1) + 1
        let nonLayer = ref.entries.map(\.name).filter { LayerName($0) == nil }
        var items: [Item] = []
        let outDefault = outDType ?? recipe.outDType ?? recipe.dtype

        func item(output: String, t: Double, slice: Int, inputName: (SourceRef) -> String) throws -> Item {
            let refs = mergedRefs[slice]
            let baseRef = usesBase ? sliceRefs[slice].first(where: { $0.model == baseIndex }) ?? SourceRef(model: baseIndex!, range: nil, params: [:]) : nil
            func input(_ r: SourceRef) throws -> (Input, TensorInfo) {
                let name = inputName(r)
                guard let e = cps[r.model].entry(name) else {
                    throw FormatError(file: cps[r.model].path, tensor: name, "missing: the merge needs it for '\(output)'")
                }
                return (Input(model: r.model, tensor: name), e.info)
            }
            let ins = try refs.map(input)
            let b = try baseRef.map(input)
            let first = b?.1 ?? ins[0].1
            for (inp, info) in ins + (b.map { [$0] } ?? []) where info.shape != first.shape {
                throw FormatError(file: cps[inp.model].path, tensor: inp.tensor,
                                  "shape \(info.shape) differs from \(first.shape) in \(cps[b?.0.model ?? ins[0].0.model].path)")
            }
            let floats = (ins.map(\.1) + (b.map { [$0.1] } ?? [])).allSatisfy { $0.dtype.isFloatingPoint }
            let selected = selection.selects(output)
            let mergeable = floats && selected
            let global = try MergePlan.resolve(method.globalParameters, output: output, t: t, levels: [slices[slice].parameters, recipe.parameters])
            let perModel = try zip(refs, ins).map { r, i in
                try MergePlan.resolve(method.modelParameters, output: i.0.tensor, t: t, levels: [r.params, slices[slice].parameters, recipe.parameters])
            }
            do { try method.check(global: global, perModel: perModel) } catch let e as UsageError {
                throw UsageError("tensor '\(output)': \(e.description)")
            }
            return Item(output: output, shape: first.shape, dtype: mergeable ? (outDefault ?? first.dtype) : first.dtype,
                        base: b?.0, models: ins.map(\.0), merge: mergeable, excluded: !selected, global: global, perModel: perModel, t: t)
        }

        let lastSlice = slices.count - 1
        for name in nonLayer where LayerName.isPreLayer(name) {
            items.append(try item(output: name, t: 0, slice: 0, inputName: { _ in name }))
        }
        var outLayer = 0
        for (k, refs) in sliceRefs.enumerated() {
            let ranges = refs.map { $0.range ?? (0, refs.isEmpty ? 0 : MergePlan.layerCount(cps[$0.model], fallback: refLayers)) }
            let lengths = Set(ranges.map { $0.1 - $0.0 })
            guard lengths.count == 1, let L = lengths.first else {
                throw UsageError("slices[\(k)]: every source needs the same number of layers, got \(ranges.map { "[\($0.0), \($0.1))" }.joined(separator: ", "))")
            }
            for r in refs {
                let have = MergePlan.layerCount(cps[r.model], fallback: refLayers)
                if let range = r.range, range.1 > have {
                    throw UsageError("slices[\(k)]: layer_range [\(range.0), \(range.1)) exceeds the \(have) layers of \(cps[r.model].path)")
                }
            }
            for layer in 0..<L {
                let t = L > 1 ? Double(layer) / Double(L - 1) : 1
                for tpl in templates {
                    let outName = LayerName.name(tpl, outLayer + layer)
                    items.append(try item(output: outName, t: t, slice: k, inputName: { r in
                        LayerName.name(tpl, (r.range?.0 ?? 0) + layer)
                    }))
                }
            }
            outLayer += L
        }
        // mergekit (since its #534) evaluates final-norm and head parameters at t = 0, the
        // start of a gradient; they sit at the end of the model, so wtool uses t = 1.
        for name in nonLayer where !LayerName.isPreLayer(name) {
            items.append(try item(output: name, t: 1, slice: lastSlice, inputName: { _ in name }))
        }
        self.items = items
        warnings += selection.unusedPatterns(in: items.map(\.output)).map { "pattern '\($0)' matches no tensor" }
        self.warnings = warnings
        layerCount = recipe.slices != nil ? outLayer : nil
    }

    static func layerCount(_ c: Checkpoint, fallback: Int) -> Int {
        if let folder = c.folder, let bytes = try? FileSystem.readAll(FileSystem.join(folder, "config.json")),
           let cfg = try? JSONParser.parse(bytes), let n = cfg["num_hidden_layers"]?.doubleValue {
            return Int(n)
        }
        let idx = c.entries.compactMap { LayerName($0.name)?.index }
        return idx.isEmpty ? fallback : idx.max()! + 1
    }

    /// First non-nil over the levels (most specific first), then the default.
    static func resolve(_ specs: [ParameterSpec], output: String, t: Double, levels: [[String: ParameterSetting]]) throws -> [String: ParamValue] {
        var out: [String: ParamValue] = [:]
        for spec in specs {
            var v: ParamValue? = nil
            for level in levels {
                if let s = level[spec.name], let x = s.evaluate(tensor: output, t: t) { v = x; break }
            }
            guard let value = v ?? spec.defaultValue else {
                throw UsageError("missing required parameter '\(spec.name)' for tensor '\(output)'")
            }
            try spec.check(value, tensor: output)
            out[spec.name] = value
        }
        return out
    }

    /// Every parameter named anywhere must be one the method knows (typos suggest the nearest).
    static func checkParameterNames(_ recipe: MergeRecipe, _ method: any MergeMethod) throws {
        let known = Set((method.globalParameters + method.modelParameters).map(\.name))
        var named: [String] = Array(recipe.parameters.keys)
        for s in (recipe.models ?? []) + (recipe.slices ?? []).flatMap(\.sources) { named += s.parameters.keys }
        for s in recipe.slices ?? [] { named += s.parameters.keys }
        for n in Set(named).sorted() where !known.contains(n) {
            let hint = nearest(n, in: Array(known)).map { " (did you mean '\($0)'?)" } ?? ""
            throw UsageError("\(method.name) has no parameter '\(n)'\(hint); it takes: \(known.sorted().joined(separator: ", "))")
        }
    }
}

/// The distinct elements, in order of first appearance.
func uniqued<T: Hashable>(_ xs: [T]) -> [T] {
    var seen = Set<T>()
    return xs.filter { seen.insert($0).inserted }
}
