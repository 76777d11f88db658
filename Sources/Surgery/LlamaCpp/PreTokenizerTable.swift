import SafeTensors

/// llama.cpp knows a byte-level BPE model's split rules by name (`tokenizer.ggml.pre`);
/// convert_hf_to_gguf finds the name by hashing the token ids of a probe text, which needs a
/// tokenizer runtime. wtool recognises the pre-tokenizer's structure in tokenizer.json instead:
/// the steps of `pre_tokenizer` (nested Sequences flattened), their kinds and flags, and Split
/// regexes compared exactly. Unknown structures are refused, never guessed.
public enum PreTokenizerTable {
    static let llama3 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let tekken = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let o200k = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let deepseekV3 = [#"\p{N}{1,3}"#, #"[一-龥぀-ゟ゠-ヿ]+"#,
                             ##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##]

    /// One pre-tokenization step as tokenizer.json describes it.
    enum Step: Equatable {
        case byteLevel(useRegex: Bool)
        case digits(individual: Bool)
        case split(String)
        case punctuation
        case other(String)
    }

    /// The `tokenizer.ggml.pre` name for tokenizer.json's pre-tokenizer; an error naming the
    /// structure when it is not one llama.cpp is known to reproduce.
    static func name(tokenizer: JSONValue, cleanUpSpaces: Bool?, file: String) throws -> String {
        let steps = flatten(tokenizer["pre_tokenizer"])
        let ignoreMerges = tokenizer["model"]?["ignore_merges"] == .bool(true)
        switch steps {
        case [.byteLevel(useRegex: true)]:
            return "gpt-2"
        case [.digits(individual: true), .byteLevel(useRegex: true)]:
            // starcoder, smollm, refact, command-r... split alike; they differ in detokenizer
            // cleanup, which tokenizer_config's clean_up_tokenization_spaces says.
            return cleanUpSpaces == false ? "smollm" : "starcoder"
        case [.split(llama3), .byteLevel(useRegex: false)]:
            return ignoreMerges ? "llama-bpe" : "dbrx"
        case [.split(qwen2), .byteLevel(useRegex: false)]:
            return "qwen2"
        case [.split(tekken), .byteLevel(useRegex: false)]:
            return "tekken"
        case [.split(o200k), .byteLevel(useRegex: false)]:
            return "gpt-4o"
        case deepseekV3.map { Step.split($0) } + [.byteLevel(useRegex: false)]:
            return "deepseek-v3"
        case [.punctuation, .byteLevel(useRegex: true), .digits(individual: false), .split("[0-9][0-9][0-9]")]:
            return "falcon"
        case _ where isDeepSeekLLM(steps):
            return "deepseek-llm"
        case _ where isDeepSeekCoder(steps):
            return "deepseek-coder"
        default:
            throw FormatError(file: file, "pre-tokenizer \(describe(steps)) is not one llama.cpp is known to reproduce "
                              + "(known: gpt-2, starcoder/smollm, llama-bpe/dbrx, qwen2, tekken, gpt-4o, deepseek-llm, deepseek-coder, deepseek-v3, falcon); "
                              + "--tokenizer none writes the GGUF without a tokenizer")
        }
    }

    /// "[\r\n]" with the characters themselves or as regex escapes (tokenizer.json files write either).
    static let newlines: [Step] = [.split("[\r\n]"), .split(#"[\r\n]"#)]

    /// DeepSeek LLM's chain: newlines, a long Latin/Greek/Cyrillic/... letter class, ASCII and
    /// full-width punctuation, trailing spaces, CJK, single digits, then byte-level. The letter and
    /// CJK classes are long literal ranges; the chain is recognised by its shape and the short ones.
    static func isDeepSeekLLM(_ steps: [Step]) -> Bool {
        guard steps.count == 7, case let .split(letters) = steps[1], case let .split(punct) = steps[2], case .split = steps[4] else { return false }
        return newlines.contains(steps[0]) && letters.hasPrefix("\\s?[A-Za-z") && punct.hasPrefix("\\s?[!-/:-~")
            && steps[3] == .split("\\s+$") && steps[5] == .digits(individual: true) && steps[6] == .byteLevel(useRegex: false)
    }

    /// DeepSeek Coder's: newlines, letters, punctuation, CJK, single digits, byte-level.
    static func isDeepSeekCoder(_ steps: [Step]) -> Bool {
        guard steps.count == 6, case .split = steps[3] else { return false }
        return newlines.contains(steps[0]) && steps[1] == .split("\\s?\\p{L}+") && steps[2] == .split("\\s?\\p{P}+")
            && steps[4] == .digits(individual: true) && steps[5] == .byteLevel(useRegex: false)
    }

    static func flatten(_ v: JSONValue?) -> [Step] {
        guard let v, case .object = v else { return [] }
        let type = v["type"]?.stringValue ?? "?"
        switch type {
        case "Sequence":
            return (v["pretokenizers"]?.arrayValue ?? []).flatMap { flatten($0) }
        case "ByteLevel":
            return [.byteLevel(useRegex: v["use_regex"] != .bool(false))]
        case "Digits":
            return [.digits(individual: v["individual_digits"] == .bool(true))]
        case "Split":
            guard v["invert"] != .bool(true), (v["behavior"]?.stringValue ?? "Isolated") == "Isolated" else { return [.other("Split")] }
            if let r = v["pattern"]?["Regex"]?.stringValue { return [.split(r)] }
            return [.other("Split(String)")]
        case "Punctuation":
            return [.punctuation]
        default:
            return [.other(type)]
        }
    }

    static func describe(_ steps: [Step]) -> String {
        if steps.isEmpty { return "(none)" }
        return steps.map { s -> String in
            switch s {
            case let .byteLevel(r): return "ByteLevel(use_regex=\(r))"
            case let .digits(i): return "Digits(individual_digits=\(i))"
            case let .split(r): return "Split(\(r.count > 40 ? String(r.prefix(40)) + "..." : r))"
            case .punctuation: return "Punctuation"
            case let .other(t): return t
            }
        }.joined(separator: " -> ")
    }
}
