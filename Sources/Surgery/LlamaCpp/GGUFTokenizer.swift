import SafeTensors

/// The tokenizer keys of a GGUF, from a Hugging Face model folder, as convert_hf_to_gguf writes
/// them: SentencePiece (`tokenizer.ggml.model = "llama"`) from tokenizer.model when the folder has
/// one, else byte-level BPE (`"gpt2"`) from tokenizer.json; then the special ids, add_* flags and
/// chat template (`SpecialVocabulary`).
public struct GGUFTokenizer: Sendable {
    public let model: String
    public let pre: String
    public let tokenCount: Int
    public let metadata: [(String, GGUFValue)]

    /// Token types (gguf `TokenType`, llama.cpp's LLAMA_TOKEN_TYPE_*).
    enum TokenType: Int32 { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }

    /// - Parameters:
    ///   - arch: "llama" (also mistral), "qwen2", "qwen3".
    ///   - vocabularySize: config.json's vocab_size (the embedding's rows), nil when absent.
    public init(folder: String, arch: String, config: JSONValue, vocabularySize: Int?) throws {
        let spm = FileSystem.join(folder, "tokenizer.model"), json = FileSystem.join(folder, "tokenizer.json")
        var tokenizer: JSONValue? = nil
        if FileSystem.kind(json) == .file {
            do { tokenizer = try JSONParser.parse(try FileSystem.readAll(json)) } catch let e as JSONParseError {
                throw FormatError(file: json, "is not valid JSON: \(e)")
            }
        }
        var kv: [(String, GGUFValue)] = []
        let tcPath = FileSystem.join(folder, "tokenizer_config.json")
        let tc = FileSystem.kind(tcPath) == .file ? try? JSONParser.parse(try FileSystem.readAll(tcPath)) : nil
        if arch == "llama", let p = tc?["add_prefix_space"], case let .bool(b) = p {
            kv.append(("tokenizer.ggml.add_space_prefix", .bool(b)))
        }
        let special: SpecialVocabulary
        if FileSystem.kind(spm) == .file {
            let pieces = try SentencePieceModel(path: spm).pieces
            let n = vocabularySize ?? pieces.count
            var tokens = (0..<n).map { "[PAD\($0)]" }, scores = [Float](repeating: -10000, count: n)
            var types = [TokenType](repeating: .unused, count: n)
            for (i, p) in pieces.enumerated() where i < n {
                tokens[i] = p.text; scores[i] = p.score
                // convert asks only IsUnknown/IsControl/IsUnused/IsByte: user-defined pieces stay normal.
                types[i] = [2: .unknown, 3: .control, 5: .unused, 6: .byte][p.type] ?? .normal
            }
            let addedPath = FileSystem.join(folder, "added_tokens.json")
            if FileSystem.kind(addedPath) == .file, case let .object(added)? = try? JSONParser.parse(try FileSystem.readAll(addedPath)) {
                for (text, idv) in added {
                    guard let id = idv.uint64Value.flatMap({ Int(exactly: $0) }), id < n else { continue }
                    tokens[id] = text; scores[id] = -1000; types[id] = .userDefined
                }
            }
            if case let .object(decoder)? = tc?["added_tokens_decoder"] {
                for (key, t) in decoder {
                    guard let id = Int(key), id >= 0, id < n, let content = t["content"]?.stringValue else { continue }
                    scores[id] = -1000
                    if t["special"] == .bool(true) || GGUFTokenizer.looksSpecial(content) {
                        tokens[id] = content; types[id] = .control
                    } else {
                        tokens[id] = content.replacingOccurrences(of: "\u{2581}", with: " "); types[id] = .userDefined
                    }
                }
            }
            model = "llama"; pre = "default"; tokenCount = n
            kv += [("tokenizer.ggml.model", .string(model)), ("tokenizer.ggml.pre", .string(pre)),
                   ("tokenizer.ggml.tokens", .array(8, tokens.map { .string($0) })),
                   ("tokenizer.ggml.scores", .array(6, scores.map { .float32($0) })),
                   ("tokenizer.ggml.token_type", .array(5, types.map { .int32($0.rawValue) }))]
            special = try SpecialVocabulary(folder: folder, tokenizer: tokenizer, config: config, vocabularySize: n)
        } else if let tokenizer {
            guard tokenizer["model"]?["type"]?.stringValue == "BPE" else {
                throw FormatError(file: json, "model type '\(tokenizer["model"]?["type"]?.stringValue ?? "?")' is not BPE, and there is no tokenizer.model")
            }
            if tokenizer["model"]?["byte_fallback"] == .bool(true) {
                throw FormatError(file: json, "is a byte-fallback (SentencePiece-style) BPE without tokenizer.model; wtool converts those from tokenizer.model only")
            }
            let cleanUp: Bool? = { if case let .bool(b)? = tc?["clean_up_tokenization_spaces"] { return b }; return nil }()
            pre = try PreTokenizerTable.name(tokenizer: tokenizer, cleanUpSpaces: cleanUp, file: json)
            let bpe = try GGUFTokenizer.bytePairTokens(tokenizer, vocabularySize: vocabularySize, file: json)
            let merges = try GGUFTokenizer.merges(tokenizer, folder: folder, file: json)
            guard !merges.isEmpty else { throw FormatError(file: json, "has no merges (llama.cpp cannot load a BPE vocabulary without them)") }
            model = "gpt2"; tokenCount = bpe.tokens.count
            kv += [("tokenizer.ggml.model", .string(model)), ("tokenizer.ggml.pre", .string(pre)),
                   ("tokenizer.ggml.tokens", .array(8, bpe.tokens.map { .string($0) })),
                   ("tokenizer.ggml.token_type", .array(5, bpe.types.map { .int32($0.rawValue) })),
                   ("tokenizer.ggml.merges", .array(8, merges.map { .string($0) }))]
            special = try SpecialVocabulary(folder: folder, tokenizer: tokenizer, config: config, vocabularySize: nil)
        } else {
            throw FormatError(file: folder, "has neither tokenizer.json nor tokenizer.model for the GGUF's tokenizer; --tokenizer none writes the GGUF without one")
        }
        kv += special.metadata
        if arch == "llama" {
            // convert's llama-specific rules: CodeLlama's infill ids, and no BOS for 49152-token
            // vocabularies (its "granite small models" rule, which SmolLM/SmolLM2 also meet).
            if vocabularySize == 32016 {
                kv += [("tokenizer.ggml.prefix_token_id", .uint32(32007)), ("tokenizer.ggml.suffix_token_id", .uint32(32008)),
                       ("tokenizer.ggml.middle_token_id", .uint32(32009)), ("tokenizer.ggml.eot_token_id", .uint32(32010))]
            }
            if (vocabularySize ?? 32000) == 49152 {
                kv.removeAll { $0.0 == "tokenizer.ggml.add_bos_token" }
                kv.append(("tokenizer.ggml.add_bos_token", .bool(false)))
            }
        }
        metadata = kv
    }

    /// Added tokens convert types CONTROL although they are not marked special.
    static func looksSpecial(_ t: String) -> Bool {
        ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].contains(t)
            || (t.hasPrefix("<|") && t.hasSuffix("|>")) || (t.hasPrefix("<\u{FF5C}") && t.hasSuffix("\u{FF5C}>"))
            || (t.hasPrefix("<unused") && t.hasSuffix(">"))
    }

    /// Tokens in id order 0 ..< vocab_size: model.vocab overlaid with the added tokens; holes are
    /// "[PAD<id>]" of type UNUSED; an added token is CONTROL when marked special or looking
    /// special, else USER_DEFINED (with "▁" as a space); the rest NORMAL.
    static func bytePairTokens(_ tokenizer: JSONValue, vocabularySize: Int?, file: String) throws -> (tokens: [String], types: [TokenType]) {
        guard case let .object(vocab)? = tokenizer["model"]?["vocab"] else { throw FormatError(file: file, "has no model.vocab object") }
        var byID: [Int: String] = [:]
        byID.reserveCapacity(vocab.count)
        for (text, v) in vocab {
            guard let id = v.uint64Value.flatMap({ Int(exactly: $0) }) else { throw FormatError(file: file, "token '\(text)' has id \(v), not a non-negative integer") }
            byID[id] = text
        }
        var addedSpecial: [String: Bool] = [:]
        for t in tokenizer["added_tokens"]?.arrayValue ?? [] {
            guard let content = t["content"]?.stringValue, let id = t["id"]?.uint64Value.flatMap({ Int(exactly: $0) }) else { continue }
            byID[id] = content
            addedSpecial[content] = t["special"] == .bool(true)
        }
        let n = vocabularySize ?? ((byID.keys.max() ?? -1) + 1)
        var tokens: [String] = [], types: [TokenType] = []
        tokens.reserveCapacity(n); types.reserveCapacity(n)
        var seen = Set<String>()
        for i in 0..<n {
            guard var t = byID[i] else { tokens.append("[PAD\(i)]"); types.append(.unused); continue }
            if let special = addedSpecial[t] {
                if special || looksSpecial(t) { types.append(.control) } else {
                    t = t.replacingOccurrences(of: "\u{2581}", with: " ")
                    types.append(.userDefined)
                }
            } else {
                types.append(.normal)
            }
            guard seen.insert(t).inserted else { throw FormatError(file: file, "token \(i) '\(t)' appears twice (llama.cpp refuses duplicate tokens)") }
            tokens.append(t)
        }
        return (tokens, types)
    }

    /// model.merges ("a b" strings, or [a, b] pairs whose spaces become U+0120 as gguf-py writes
    /// them), else merges.txt beside it.
    static func merges(_ tokenizer: JSONValue, folder: String, file: String) throws -> [String] {
        if let list = tokenizer["model"]?["merges"]?.arrayValue, !list.isEmpty {
            return try list.map { m in
                if let s = m.stringValue { return s }
                guard let pair = m.arrayValue, pair.count == 2, let a = pair[0].stringValue, let b = pair[1].stringValue else {
                    throw FormatError(file: file, "a merge is neither \"a b\" nor [a, b]")
                }
                let enc = { (s: String) in s.replacingOccurrences(of: " ", with: "\u{0120}") }
                return enc(a) + " " + enc(b)
            }
        }
        let txt = FileSystem.join(folder, "merges.txt")
        guard FileSystem.kind(txt) == .file, let text = String(validating: try FileSystem.readAll(txt), as: UTF8.self) else { return [] }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingWhitespace() }
        if lines.first?.hasPrefix("#") == true { lines.removeFirst() }
        return lines.compactMap { l in
            let parts = l.split(whereSeparator: { $0 == " " || $0 == "\t" })
            return parts.count == 2 ? "\(parts[0]) \(parts[1])" : nil
        }
    }
}

extension Substring {
    func trimmingWhitespace() -> String {
        let ws: Set<Character> = [" ", "\t", "\r", "\n"]
        guard let a = firstIndex(where: { !ws.contains($0) }), let b = lastIndex(where: { !ws.contains($0) }) else { return "" }
        return String(self[a...b])
    }
}
