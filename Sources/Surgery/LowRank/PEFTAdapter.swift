import SafeTensors

/// The PEFT LoRA adapter format (huggingface/peft): `adapter_config.json` plus
/// `adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` [r, in] and
/// `.lora_B.weight` [out, r] (embeddings: `.lora_embedding_A` [r, vocab], `.lora_embedding_B`
/// [dim, r]), and full weights of `modules_to_save` as `base_model.model.<module>.weight`.
public struct PEFTAdapterConfig: Sendable {
    public var r = 8
    public var loraAlpha = 8.0
    public var useRSLoRA = false
    public var rankPattern: [(String, Int)] = []
    public var alphaPattern: [(String, Double)] = []
    /// A list (exact name or `.name` suffix) or one regular expression (full match).
    public enum Targets: Sendable { case list([String]), regex(String), none }
    public var targetModules: Targets = .none
    public var fanInFanOut = false
    public var loraBias = false
    public var modulesToSave: [String] = []
    public var baseModel: String?
    public var initLoraWeights: JSONValue = .bool(true)

    /// The adapter families wtool merges.
    public enum Kind: String, Sendable { case lora, dora, miss, fourierft }
    public var kind = Kind.lora
    /// MiSS / Bone: block size along the input axis, the mini variant's output tiling, the variant.
    public enum MiSSVariant: String, Sendable { case standard, mini, bat }
    public var missVariant = MiSSVariant.standard
    public var miniR = 1
    /// FourierFT: frequencies per module (and per-module overrides), ΔW's scale, the seed of the
    /// frequency locations.
    public var nFrequency = 1000
    public var nFrequencyPattern: [(String, Int)] = []
    public var fourierScaling = 150.0
    public var randomLocSeed: Int64?

    public static let prefix = "base_model.model."
    public static let configName = "adapter_config.json"
    public static let weightsName = "adapter_model.safetensors"
    public static let pickledWeightsName = "adapter_model.bin"

    public init() {}

    /// Reads a config and refuses, with the reason, what wtool does not merge.
    public init(path: String) throws {
        let json = try JSONParser.parse(try FileSystem.readAll(path))
        func fail(_ m: String) -> FormatError { FormatError(file: path, m) }
        guard let type = json["peft_type"]?.stringValue else { throw fail("no peft_type") }
        switch type {
        case "LORA": kind = json["use_dora"] == .bool(true) ? .dora : .lora
        case "MISS", "BONE":
            kind = .miss
            r = 64
            switch json["init_weights"] {
            case .string("bat")?: missVariant = .bat
            case .string("mini")?: missVariant = .mini
            case nil, .bool?, .null?: missVariant = .standard
            case let v?: throw fail("init_weights \(v.compact()) is not a MiSS variant (true, false, \"bat\", \"mini\")")
            }
            if let v = json["mini_r"]?.doubleValue { miniR = Int(v) }
        case "FOURIERFT":
            kind = .fourierft
            if let v = json["n_frequency"]?.doubleValue { nFrequency = Int(v) }
            nFrequencyPattern = (json["n_frequency_pattern"]?.objectValue ?? []).compactMap { k, v in v.doubleValue.map { (k, Int($0)) } }
            if let v = json["scaling"]?.doubleValue { fourierScaling = v }
            switch json["random_loc_seed"] {
            case nil: randomLocSeed = 777
            case .null?: throw fail("random_loc_seed is null: FourierFT's frequency locations cannot be drawn (PEFT fails too)")
            case let v?:
                guard let d = v.doubleValue, let i = Int64(exactly: d) else { throw fail("random_loc_seed \(v.compact()) is not an integer") }
                randomLocSeed = i
            }
        default:
            throw fail("peft_type \(type) is not supported: wtool merges LoRA, DoRA, MiSS/Bone and FourierFT adapters")
        }
        if kind == .dora, json["lora_bias"] == .bool(true) { throw fail("lora_bias with DoRA: PEFT refuses this combination") }
        for key in ["layer_replication", "use_qalora", "use_bdlora", "alora_invocation_tokens", "arrow_config", "target_parameters", "trainable_token_indices"] {
            if let v = json[key], v != .null, v != .bool(false), v != .array([]), v != .object([]) {
                throw fail("\(key) is set: wtool does not merge that LoRA extension")
            }
        }
        if let v = json["r"]?.doubleValue { r = Int(v) }
        if let v = json["lora_alpha"]?.doubleValue { loraAlpha = v }
        useRSLoRA = json["use_rslora"] == .bool(true)
        fanInFanOut = json["fan_in_fan_out"] == .bool(true)
        loraBias = json["lora_bias"] == .bool(true)
        rankPattern = (json["rank_pattern"]?.objectValue ?? []).compactMap { k, v in v.doubleValue.map { (k, Int($0)) } }
        alphaPattern = (json["alpha_pattern"]?.objectValue ?? []).compactMap { k, v in v.doubleValue.map { (k, $0) } }
        switch json["target_modules"] {
        case let .string(s)?: targetModules = .regex(s)
        case let .array(a)?: targetModules = .list(a.compactMap(\.stringValue))
        default: targetModules = .none
        }
        modulesToSave = json["modules_to_save"]?.arrayValue?.compactMap(\.stringValue) ?? []
        baseModel = json["base_model_name_or_path"]?.stringValue
        if let l = json["layers_to_transform"], l != .null { throw fail("layers_to_transform is not supported") }
    }

    /// PEFT's pattern rule: a key matches a module if `re.match(rf"(.*\.)?({key})$", name)`; the
    /// first matching key wins.
    static func patternMatch(_ key: String, _ name: String) -> Bool {
        Regex.wholeMatch("(.*\\.)?(\(key))", name)
    }

    public func rank(for module: String) -> Int {
        rankPattern.first { PEFTAdapterConfig.patternMatch($0.0, module) }?.1 ?? r
    }

    public func alpha(for module: String) -> Double {
        alphaPattern.first { PEFTAdapterConfig.patternMatch($0.0, module) }?.1 ?? loraAlpha
    }

    /// PEFT's scale: alpha / r, or alpha / sqrt(r) with rsLoRA.
    public func scale(for module: String) -> Double {
        let r = Double(rank(for: module))
        return alpha(for: module) / (useRSLoRA ? r.squareRoot() : r)
    }

    /// FourierFT's frequency count for a module: the first n_frequency_pattern key K with
    /// `re.match(".*\\.K$", module)` (PEFT's rule: a dot before K is required), else n_frequency.
    public func frequencies(for module: String) -> Int {
        nFrequencyPattern.first { Regex.wholeMatch(".*\\.(\($0.0))", module) }?.1 ?? nFrequency
    }

    /// Whether target_modules selects a module (exact name, `.name` suffix, or full regex match).
    public func targets(_ module: String) -> Bool {
        switch targetModules {
        case let .list(names): return names.contains { module == $0 || module.hasSuffix("." + $0) }
        case let .regex(r): return Regex.wholeMatch(r, module)
        case .none: return false
        }
    }

    public var json: JSONValue {
        var o: [(String, JSONValue)] = [
            ("peft_type", .string("LORA")), ("task_type", .string("CAUSAL_LM")), ("r", .int(r)), ("lora_alpha", .double(loraAlpha)),
            ("use_rslora", .bool(useRSLoRA)), ("fan_in_fan_out", .bool(fanInFanOut)), ("lora_bias", .bool(loraBias)),
            ("bias", .string("none")), ("lora_dropout", .double(0)), ("inference_mode", .bool(true)), ("use_dora", .bool(kind == .dora)),
            ("init_lora_weights", initLoraWeights),
            ("rank_pattern", .object(rankPattern.map { ($0.0, .int($0.1)) })),
            ("alpha_pattern", .object(alphaPattern.map { ($0.0, .double($0.1)) })),
            ("modules_to_save", modulesToSave.isEmpty ? .null : .array(modulesToSave.map { .string($0) })),
            ("base_model_name_or_path", baseModel.map { .string($0) } ?? .null),
        ]
        switch targetModules {
        case let .list(names): o.append(("target_modules", .array(names.map { .string($0) })))
        case let .regex(r): o.append(("target_modules", .string(r)))
        case .none: o.append(("target_modules", .null))
        }
        return .object(o)
    }
}

/// POSIX extended regular expressions (PEFT's patterns are Python regexes; the common subset —
/// literals, `.`, `*`, `+`, `?`, `|`, groups, classes, `\\.` — behaves the same).
enum Regex {
    static func wholeMatch(_ pattern: String, _ s: String) -> Bool {
        var re = regex_t()
        // Python's `\.` and friends are ERE too; anchor for a full match.
        guard regcomp(&re, "^(" + pattern + ")$", REG_EXTENDED | REG_NOSUB) == 0 else { return false }
        defer { regfree(&re) }
        return regexec(&re, s, 0, nil, 0) == 0
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
