import SafeTensors

/// Token strings by id, for naming embedding rows: from tokenizer.json (model vocabulary plus
/// added tokens) or, failing that, SentencePiece's tokenizer.model.
public struct TokenStrings: Sendable {
    private let byID: [Int: String]

    public init(folder: String) throws {
        var map: [Int: String] = [:]
        let json = FileSystem.join(folder, "tokenizer.json"), spm = FileSystem.join(folder, "tokenizer.model")
        if FileSystem.kind(json) == .file {
            let t: JSONValue
            do { t = try JSONParser.parse(try FileSystem.readAll(json)) } catch let e as JSONParseError {
                throw FormatError(file: json, "is not valid JSON: \(e)")
            }
            if case let .object(vocab)? = t["model"]?["vocab"] {
                for (text, v) in vocab { if let id = v.uint64Value.flatMap({ Int(exactly: $0) }) { map[id] = text } }
            } else if let list = t["model"]?["vocab"]?.arrayValue {   // Unigram: [[piece, score], ...]
                for (id, item) in list.enumerated() { if let s = item.arrayValue?.first?.stringValue { map[id] = s } }
            }
            for a in t["added_tokens"]?.arrayValue ?? [] {
                if let id = a["id"]?.uint64Value.flatMap({ Int(exactly: $0) }), let s = a["content"]?.stringValue { map[id] = s }
            }
        } else if FileSystem.kind(spm) == .file {
            for (id, p) in try SentencePieceModel(path: spm).pieces.enumerated() { map[id] = p.text }
        } else {
            throw FormatError(file: folder, "has neither tokenizer.json nor tokenizer.model to name tokens")
        }
        byID = map
    }

    public subscript(id: Int) -> String? { byID[id] }
    public var isEmpty: Bool { byID.isEmpty }
}
