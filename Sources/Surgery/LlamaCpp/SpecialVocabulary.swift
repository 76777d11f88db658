import SafeTensors

/// Special token ids, add_bos/add_eos/add_sep flags and the chat template, found the way
/// gguf-py's `SpecialVocab` finds them: tokenizer_config.json's `<type>_token` matched against
/// tokenizer.json's added tokens, then config.json's `<type>_token_id` (first value wins);
/// flags from tokenizer.json's post-processor, overridden by tokenizer_config's `add_<type>_token`;
/// the template from tokenizer_config, else chat_template.jinja (+ additional_chat_templates/),
/// else chat_template.json.
struct SpecialVocabulary {
    /// In discovery order; `cls` has no GGUF key and is never written (as in gguf-py).
    private(set) var ids: [(String, Int)] = []
    private(set) var add: [(String, Bool)] = []
    var chatTemplates: [(name: String, template: String)] = []
    private var types = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"]
    private let vocabularySize: Int?

    static let idKeys = ["bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "sep": "seperator_token_id",
                         "pad": "padding_token_id", "mask": "mask_token_id", "eot": "eot_token_id", "eom": "eom_token_id"]

    /// - Parameter vocabularySize: ids at or above it are skipped (SentencePiece); nil keeps all (BPE, as convert does).
    init(folder: String, tokenizer: JSONValue?, config: JSONValue?, vocabularySize: Int?) throws {
        self.vocabularySize = vocabularySize
        let configPath = FileSystem.join(folder, "tokenizer_config.json")
        var tc: [String: JSONValue]? = nil
        if FileSystem.kind(configPath) == .file {
            guard case let .object(members)? = try? JSONParser.parse(try FileSystem.readAll(configPath)) else {
                throw FormatError(file: configPath, "is not a JSON object")
            }
            tc = Dictionary(members, uniquingKeysWith: { _, b in b })
        }
        let added = tokenizer?["added_tokens"]?.arrayValue ?? []
        if let tokenizer { readPostProcessor(tokenizer, &tc) }
        guard let tc else { readConfig(config); return }
        try readChatTemplate(folder: folder, tc: tc)
        for typ in types {
            if case let .bool(b)? = tc["add_\(typ)_token"] { setAdd(typ, b) }
            let content: String
            switch tc["\(typ)_token"] {
            case let .string(s)?: content = s
            case let .object(o)?:
                guard let s = o.last(where: { $0.0 == "content" })?.1.stringValue else { continue }
                content = s
            default: continue
            }
            if let id = added.first(where: { $0["content"]?.stringValue == content })?["id"] { setID(typ, id) }
        }
        readConfig(config)
    }

    private mutating func readConfig(_ config: JSONValue?) {
        guard let config else { return }
        for typ in types {
            var id = config["\(typ)_token_id"]
            if id == nil || id == .null { id = config["text_config"]?["\(typ)_token_id"] }
            if let id { setID(typ, id) }
        }
    }

    /// gguf-py's `_set_special_token`: integers only (a list of eos ids is ignored), first value wins.
    private mutating func setID(_ typ: String, _ v: JSONValue) {
        guard let raw = v.uint64Value, let id = Int(exactly: raw) else { return }
        if let n = vocabularySize, id >= n { return }
        if ids.contains(where: { $0.0 == typ }) { return }
        ids.append((typ, id))
    }

    mutating func setAdd(_ typ: String, _ b: Bool) {
        if let i = add.firstIndex(where: { $0.0 == typ }) { add[i].1 = b } else { add.append((typ, b)) }
    }

    /// RobertaProcessing adds bos, eos and sep; a TemplateProcessing says by its first and last
    /// special tokens whether bos/eos are added (a trailing special other than eos becomes eos,
    /// the old eos eot), and by what separates A and B in `pair` whether sep is.
    private mutating func readPostProcessor(_ tokenizer: JSONValue, _ tc: inout [String: JSONValue]?) {
        func content(_ v: JSONValue?) -> String? {
            if case let .string(s)? = v { return s }
            return v?["content"]?.stringValue
        }
        var bos = content(tc?["bos_token"]), cls = content(tc?["cls_token"])
        var eos = content(tc?["eos_token"]), sep = content(tc?["sep_token"])
        if (bos ?? "").isEmpty, let c = cls, !c.isEmpty, tc != nil, !(tc!.isEmpty) { tc!["bos_token"] = .string(c); bos = c }
        if (eos ?? "").isEmpty, let s = sep, !s.isEmpty, tc != nil, !(tc!.isEmpty) { tc!["eos_token"] = .string(s); eos = s }
        guard let pp = tokenizer["post_processor"], pp != .null else { return }
        let processors = pp["processors"]?.arrayValue ?? [pp]
        let hasConfig = tc.map { !$0.isEmpty } ?? false
        for p in processors {
            switch p["type"]?.stringValue {
            case "RobertaProcessing":
                setAdd("bos", true); setAdd("eos", true); setAdd("sep", true)
                if (cls ?? "").isEmpty && hasConfig { cls = p["cls"]?.arrayValue?.first?.stringValue ?? bos; tc!["cls_token"] = cls.map { .string($0) } ?? .null }
                if (sep ?? "").isEmpty && hasConfig { sep = p["sep"]?.arrayValue?.first?.stringValue ?? eos; tc!["sep_token"] = sep.map { .string($0) } ?? .null }
            case "TemplateProcessing":
                let single = p["single"]?.arrayValue ?? [], pair = p["pair"]?.arrayValue ?? []
                func special(_ v: JSONValue?) -> String? { v?["SpecialToken"]?["id"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } }
                var first: String? = nil, last: String? = nil
                if single.count > 1 {
                    first = special(single.first)
                    if let f = first {
                        if !hasConfig { bos = f }
                        setAdd("bos", f == bos || f == cls)
                    }
                    last = special(single.last)
                    if let l = last {
                        if !hasConfig { eos = l } else if l != eos {
                            // The old eos stays as eot (or eom) when the template ends on another token.
                            for extra in ["eot", "eom"] where !types.contains(extra) {
                                types.append(extra)
                                tc!["\(extra)_token"] = eos.map { .string($0) } ?? .null
                                break
                            }
                            tc!["eos_token"] = .string(l); eos = l
                        }
                        setAdd("eos", l == eos)
                    }
                }
                guard !pair.isEmpty else { continue }
                let start = first != nil && special(pair.first) == first ? 1 : 0
                let stop = last != nil && special(pair.last) == last ? pair.count - 1 : pair.count
                guard start < stop else { continue }
                var middle = Array(pair[start..<stop])
                guard middle.first?["Sequence"]?["id"]?.stringValue == "A", middle.last?["Sequence"]?["id"]?.stringValue == "B" else { continue }
                middle = Array(middle.dropFirst().dropLast())
                guard !middle.isEmpty else { continue }
                var addSep = false
                if let s = special(middle[0]), s == sep || s == eos, last == nil { addSep = true }
                if middle.count == 2, let s = special(middle[1]), s == sep || s == eos { addSep = true }
                setAdd("sep", addSep)
                if addSep && (sep ?? "").isEmpty && hasConfig { tc!["sep_token"] = eos.map { .string($0) } ?? .null }
            default:
                continue
            }
        }
    }

    private mutating func readChatTemplate(folder: String, tc: [String: JSONValue]) throws {
        var fromFiles: [(String, String)] = []
        let jinja = FileSystem.join(folder, "chat_template.jinja"), json = FileSystem.join(folder, "chat_template.json")
        if FileSystem.kind(jinja) == .file {
            fromFiles.append(("default", try text(jinja)))
            let extra = FileSystem.join(folder, "additional_chat_templates")
            if FileSystem.kind(extra) == .directory {
                for f in FileSystem.list(extra).sorted() where f.hasSuffix(".jinja") {
                    fromFiles.append((String(f.dropLast(".jinja".count)), try text(FileSystem.join(extra, f))))
                }
            }
        } else if FileSystem.kind(json) == .file, let t = (try? JSONParser.parse(try FileSystem.readAll(json)))?["chat_template"] {
            fromFiles = SpecialVocabulary.templates(t)
        }
        if let t = tc["chat_template"] { chatTemplates = SpecialVocabulary.templates(t) } else { chatTemplates = fromFiles }
    }

    private func text(_ path: String) throws -> String {
        guard let s = String(validating: try FileSystem.readAll(path), as: UTF8.self) else { throw FormatError(file: path, "is not UTF-8 text") }
        return s
    }

    /// A template string, or a list of {name, template} (names reduced to [A-Za-z0-9_]).
    static func templates(_ v: JSONValue) -> [(String, String)] {
        if case let .string(s) = v { return [("default", s)] }
        return (v.arrayValue ?? []).compactMap { c in
            guard let name = c["name"]?.stringValue, let t = c["template"]?.stringValue, !name.isEmpty else { return nil }
            let clean = String(name.unicodeScalars.map { s -> Character in
                (s.isASCII && (s.properties.isAlphabetic || ("0"..."9").contains(s))) ? Character(s) : "_"
            })
            return (clean, t)
        }
    }

    /// The GGUF keys, as gguf-py's SpecialVocab.add_to_gguf writes them.
    var metadata: [(String, GGUFValue)] {
        var kv: [(String, GGUFValue)] = []
        for (typ, id) in ids { if let k = SpecialVocabulary.idKeys[typ] { kv.append(("tokenizer.ggml.\(k)", .uint32(UInt32(id)))) } }
        for (typ, b) in add where ["bos", "eos", "sep"].contains(typ) { kv.append(("tokenizer.ggml.add_\(typ)_token", .bool(b))) }
        let named = chatTemplates.filter { $0.name != "default" }
        for (name, t) in named { kv.append(("tokenizer.chat_template.\(name)", .string(t))) }
        if !named.isEmpty { kv.append(("tokenizer.chat_templates", .array(8, named.map { .string($0.name) }))) }
        if let d = chatTemplates.first(where: { $0.name == "default" }) { kv.append(("tokenizer.chat_template", .string(d.template))) }
        return kv
    }
}
