import SafeTensors

/// A GGUF's tokenizer back as the Hugging Face files transformers loads: for SentencePiece
/// ("llama") tokenizer.model (`sentencePiece`); for byte-level BPE (`tokenizer.ggml.model =
/// "gpt2"`) tokenizer.json (BPE vocabulary and merges, the pre-tokenizer llama.cpp names by
/// `tokenizer.ggml.pre`, byte-level decoding, BOS added when the GGUF says so) and
/// tokenizer_config.json (special tokens, add_* flags, chat template). The inverse of
/// `GGUFTokenizer`'s BPE branch. Tokens typed CONTROL or USER_DEFINED become added tokens
/// (special for CONTROL) and stay in the vocabulary; "[PAD<id>]" holes (UNUSED) are left out.
public struct GGUFTokenizerImport: Sendable {
    /// File name and contents.
    public let files: [(String, [UInt8])]

    /// nil when the GGUF has no tokenizer; throws for one that cannot be rebuilt faithfully.
    public init?(_ file: GGUFFile, contextLength: Int?) throws {
        guard let model = file.value("tokenizer.ggml.model")?.string else { return nil }
        let path = file.path
        guard model == "gpt2" || model == "llama" else {
            throw FormatError(file: path, "tokenizer model '\(model)' is not rebuilt (byte-level BPE 'gpt2' and SentencePiece 'llama' are): copy the original tokenizer files")
        }
        guard case let .array(_, tokenValues)? = file.value("tokenizer.ggml.tokens") else { throw FormatError(file: path, "no tokenizer.ggml.tokens array") }
        if model == "llama" {
            files = try GGUFTokenizerImport.sentencePiece(file, tokens: tokenValues.map { $0.string ?? "" }, contextLength: contextLength)
            return
        }
        let pre = file.value("tokenizer.ggml.pre")?.string ?? "default"
        guard let preTokenizer = GGUFTokenizerImport.preTokenizer(pre) else {
            throw FormatError(file: path, "tokenizer.ggml.pre '\(pre)' is not one wtool rebuilds (gpt-2, starcoder, smollm, llama-bpe, dbrx, qwen2, tekken, gpt-4o, deepseek-v3): copy the original tokenizer files")
        }
        let tokens = tokenValues.map { $0.string ?? "" }
        var types = [Int](repeating: 1, count: tokens.count)
        if case let .array(_, t)? = file.value("tokenizer.ggml.token_type") {
            guard t.count == tokens.count else { throw FormatError(file: path, "tokenizer.ggml.token_type has \(t.count) entries for \(tokens.count) tokens") }
            types = t.map { $0.integer ?? 1 }
        }
        guard case let .array(_, mergeValues)? = file.value("tokenizer.ggml.merges") else { throw FormatError(file: path, "no tokenizer.ggml.merges array") }
        func id(_ key: String) -> Int? {
            guard let v = file.value("tokenizer.ggml.\(key)_token_id")?.integer, v >= 0, v < tokens.count else { return nil }
            return v
        }
        func flag(_ key: String) -> Bool? { if case let .bool(b)? = file.value("tokenizer.ggml.\(key)") { return b }; return nil }

        var vocab: [(String, JSONValue)] = []
        var added: [JSONValue] = []
        var decoder: [(String, JSONValue)] = []
        for (i, t) in tokens.enumerated() {
            switch types[i] {
            case 3, 4:
                let special = types[i] == 3
                added.append(.object([("id", .int(i)), ("content", .string(t)), ("single_word", .bool(false)), ("lstrip", .bool(false)),
                                      ("rstrip", .bool(false)), ("normalized", .bool(!special)), ("special", .bool(special))]))
                decoder.append((String(i), .object([("content", .string(t)), ("lstrip", .bool(false)), ("normalized", .bool(!special)),
                                                    ("rstrip", .bool(false)), ("single_word", .bool(false)), ("special", .bool(special))])))
                // also in the model's vocabulary: `tokenizers` gives an added token that is not
                // there the next free id, whatever its "id" says
                vocab.append((t, .int(i)))
            case 5 where t == "[PAD\(i)]":
                continue
            default:
                vocab.append((t, .int(i)))
            }
        }
        let bos = id("bos"), addBOS = (flag("add_bos_token") ?? false) && bos != nil
        let addEOS = (flag("add_eos_token") ?? false) && id("eos") != nil
        var post: JSONValue = .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(true)), ("trim_offsets", .bool(false)), ("use_regex", .bool(true))])
        if addBOS || addEOS {
            func piece(_ t: Int?, _ on: Bool) -> [JSONValue] {
                guard on, let t else { return [] }
                return [.object([("SpecialToken", .object([("id", .string(tokens[t])), ("type_id", .int(0))]))])]
            }
            let seq: (String, Int) -> JSONValue = { .object([("Sequence", .object([("id", .string($0)), ("type_id", .int($1))]))]) }
            let single = piece(bos, addBOS) + [seq("A", 0)] + piece(id("eos"), addEOS)
            let pair = single + piece(bos, addBOS) + [seq("B", 1)] + piece(id("eos"), addEOS)
            var specials: [(String, JSONValue)] = []
            for t in [addBOS ? bos : nil, addEOS ? id("eos") : nil].compactMap({ $0 }) where !specials.contains(where: { $0.0 == tokens[t] }) {
                specials.append((tokens[t], .object([("id", .string(tokens[t])), ("ids", .array([.int(t)])), ("tokens", .array([.string(tokens[t])]))])))
            }
            post = .object([("type", .string("TemplateProcessing")), ("single", .array(single)), ("pair", .array(pair)),
                            ("special_tokens", .object(specials))])
        }
        let tokenizer: JSONValue = .object([
            ("version", .string("1.0")), ("truncation", .null), ("padding", .null),
            ("added_tokens", .array(added)), ("normalizer", .null), ("pre_tokenizer", preTokenizer),
            ("post_processor", post),
            ("decoder", .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(true)), ("trim_offsets", .bool(true)), ("use_regex", .bool(true))])),
            ("model", .object([("type", .string("BPE")), ("dropout", .null), ("unk_token", .null), ("continuing_subword_prefix", .null),
                               ("end_of_word_suffix", .null), ("fuse_unk", .bool(false)), ("byte_fallback", .bool(false)),
                               ("ignore_merges", .bool(pre == "llama-bpe")), ("vocab", .object(vocab)),
                               ("merges", .array(mergeValues.map { .string($0.string ?? "") }))])),
        ])
        var config: [(String, JSONValue)] = [("tokenizer_class", .string("PreTrainedTokenizerFast")),
                                             ("add_bos_token", .bool(addBOS)), ("add_eos_token", .bool(addEOS)),
                                             ("clean_up_tokenization_spaces", .bool(pre == "starcoder" || pre == "gpt-2")),
                                             ("added_tokens_decoder", .object(decoder))]
        for (key, name) in [("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token"),
                            ("seperator", "sep_token")] {
            if let t = id(key) { config.append((name, .string(tokens[t]))) }
        }
        if let template = file.value("tokenizer.chat_template")?.string { config.append(("chat_template", .string(template))) }
        if let n = contextLength { config.append(("model_max_length", .int(n))) }
        files = [("tokenizer.json", Array(tokenizer.compact().utf8)),
                 ("tokenizer_config.json", Array((JSONValue.object(config).pretty(indent: 2, sortKeys: true) + "\n").utf8))]
    }

    /// A SentencePiece vocabulary ("llama"): tokenizer.model rebuilt from the pieces, scores and
    /// types, with the special ids and the normalisation llama.cpp applies (identity, dummy prefix
    /// per tokenizer.ggml.add_space_prefix, default true); tokenizer_config.json as for BPE.
    static func sentencePiece(_ file: GGUFFile, tokens: [String], contextLength: Int?) throws -> [(String, [UInt8])] {
        let path = file.path
        func array(_ key: String) -> [GGUFValue]? { if case let .array(_, v)? = file.value(key) { return v }; return nil }
        let scores = array("tokenizer.ggml.scores")?.map { v -> Float in if case let .float32(f) = v { return f }; return 0 } ?? []
        let types = array("tokenizer.ggml.token_type")?.map { $0.integer ?? 1 } ?? []
        guard scores.count == tokens.count, types.count == tokens.count else {
            throw FormatError(file: path, "tokenizer.ggml.scores / token_type do not have one entry per token (\(tokens.count))")
        }
        guard Set(tokens).count == tokens.count else { throw FormatError(file: path, "tokenizer.ggml.tokens holds a token twice: not a SentencePiece vocabulary") }
        func id(_ key: String) -> Int? {
            guard let v = file.value("tokenizer.ggml.\(key)_token_id")?.integer, v >= 0, v < tokens.count else { return nil }
            return v
        }
        func flag(_ key: String) -> Bool? { if case let .bool(b)? = file.value("tokenizer.ggml.\(key)") { return b }; return nil }
        guard let unk = id("unknown") ?? types.firstIndex(of: 2) else { throw FormatError(file: path, "no unknown token: SentencePiece needs one") }
        let pieces = tokens.indices.map { SentencePieceModel.Piece(text: tokens[$0], score: scores[$0], type: (1...6).contains(types[$0]) ? types[$0] : 1) }
        let model = SentencePieceModel.serialize(pieces: pieces, unkID: unk, bosID: id("bos"), eosID: id("eos"), padID: id("padding"),
                                                 byteFallback: types.contains(6), addDummyPrefix: flag("add_space_prefix") ?? true)
        var config: [(String, JSONValue)] = [("tokenizer_class", .string("LlamaTokenizer")),
                                             ("add_bos_token", .bool(flag("add_bos_token") ?? true)),
                                             ("add_eos_token", .bool(flag("add_eos_token") ?? false)),
                                             ("clean_up_tokenization_spaces", .bool(false)), ("legacy", .bool(false))]
        if let prefix = flag("add_space_prefix") { config.append(("add_prefix_space", .bool(prefix))) }
        for (key, name) in [("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token")] {
            if let t = id(key) { config.append((name, .string(tokens[t]))) }
        }
        if let template = file.value("tokenizer.chat_template")?.string { config.append(("chat_template", .string(template))) }
        if let n = contextLength { config.append(("model_max_length", .int(n))) }
        return [("tokenizer.model", model), ("tokenizer_config.json", Array((JSONValue.object(config).pretty(indent: 2, sortKeys: true) + "\n").utf8))]
    }

    /// tokenizer.json's pre_tokenizer for llama.cpp's pre-tokenizer name (the structures
    /// `PreTokenizerTable` recognises on export); nil for names whose exact rules wtool lacks.
    static func preTokenizer(_ pre: String) -> JSONValue? {
        func byteLevel(_ regex: Bool) -> JSONValue {
            .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)), ("trim_offsets", .bool(true)), ("use_regex", .bool(regex))])
        }
        func split(_ r: String) -> JSONValue {
            .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(r))])), ("behavior", .string("Isolated")), ("invert", .bool(false))])
        }
        func sequence(_ s: [JSONValue]) -> JSONValue { .object([("type", .string("Sequence")), ("pretokenizers", .array(s))]) }
        switch pre {
        case "gpt-2", "default": return byteLevel(true)
        case "starcoder", "smollm":
            return sequence([.object([("type", .string("Digits")), ("individual_digits", .bool(true))]), byteLevel(true)])
        case "llama-bpe", "dbrx": return sequence([split(PreTokenizerTable.llama3), byteLevel(false)])
        case "qwen2": return sequence([split(PreTokenizerTable.qwen2), byteLevel(false)])
        case "tekken": return sequence([split(PreTokenizerTable.tekken), byteLevel(false)])
        case "gpt-4o": return sequence([split(PreTokenizerTable.o200k), byteLevel(false)])
        case "deepseek-v3": return sequence(PreTokenizerTable.deepseekV3.map(split) + [byteLevel(false)])
        default: return nil
        }
    }
}
