import SafeTensors

/// The pieces of a SentencePiece `tokenizer.model` (a serialized `sentencepiece.ModelProto`,
/// proto2): text, score and type of each piece, in id order. A small protobuf reader of its own:
/// ModelProto field 1 is a repeated SentencePiece {1: piece (string), 2: score (fixed32 float),
/// 3: type (varint enum, default NORMAL = 1)}; every other field is skipped by its wire type.
public struct SentencePieceModel: Sendable {
    public struct Piece: Sendable, Equatable {
        public var text: String
        public var score: Float
        /// NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.
        public var type: Int
    }
    public let pieces: [Piece]

    public init(path: String) throws {
        let bytes = try FileSystem.readAll(path)
        do {
            var pieces: [Piece] = []
            var r = ProtobufReader(bytes[...])
            while let (field, wire) = try r.key() {
                if field == 1 && wire == 2 {
                    pieces.append(try SentencePieceModel.piece(try r.bytes()))
                } else {
                    try r.skip(wire)
                }
            }
            guard !pieces.isEmpty else { throw ProtobufReader.Malformed("no pieces") }
            self.pieces = pieces
        } catch let e as ProtobufReader.Malformed {
            throw FormatError(file: path, "is not a SentencePiece model: \(e.reason)")
        }
    }

    private static func piece(_ b: ArraySlice<UInt8>) throws -> Piece {
        var r = ProtobufReader(b)
        var p = Piece(text: "", score: 0, type: 1)
        while let (field, wire) = try r.key() {
            switch (field, wire) {
            case (1, 2):
                let raw = try r.bytes()
                guard let s = String(validating: raw, as: UTF8.self) else { throw ProtobufReader.Malformed("a piece is not UTF-8") }
                p.text = s
            case (2, 5): p.score = Float(bitPattern: try r.fixed32())
            case (3, 0): p.type = Int(truncatingIfNeeded: try r.varint())
            default: try r.skip(wire)
            }
        }
        return p
    }
}

/// Protocol-buffer wire format, as much as reading a message's fields needs.
struct ProtobufReader {
    struct Malformed: Error { let reason: String; init(_ r: String) { reason = r } }
    private var b: ArraySlice<UInt8>
    init(_ b: ArraySlice<UInt8>) { self.b = b }

    /// The next field number and wire type, or nil at the end.
    mutating func key() throws -> (Int, Int)? {
        guard !b.isEmpty else { return nil }
        let k = try varint()
        guard k >> 3 > 0, k >> 3 < 1 << 29 else { throw Malformed("field number \(k >> 3)") }
        return (Int(k >> 3), Int(k & 7))
    }

    mutating func varint() throws -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while let byte = b.first {
            b = b.dropFirst()
            guard shift < 64 else { throw Malformed("varint longer than 10 bytes") }
            v |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return v }
            shift += 7
        }
        throw Malformed("truncated varint")
    }

    mutating func fixed32() throws -> UInt32 {
        guard b.count >= 4 else { throw Malformed("truncated fixed32") }
        var v: UInt32 = 0
        for (k, byte) in b.prefix(4).enumerated() { v |= UInt32(byte) << (8 * UInt32(k)) }
        b = b.dropFirst(4)
        return v
    }

    mutating func bytes() throws -> ArraySlice<UInt8> {
        let n = try varint()
        guard n <= UInt64(b.count) else { throw Malformed("a length of \(n) runs past the end") }
        let out = b.prefix(Int(n))
        b = b.dropFirst(Int(n))
        return out
    }

    mutating func skip(_ wire: Int) throws {
        switch wire {
        case 0: _ = try varint()
        case 1: guard b.count >= 8 else { throw Malformed("truncated fixed64") }; b = b.dropFirst(8)
        case 2: _ = try bytes()
        case 5: _ = try fixed32()
        default: throw Malformed("wire type \(wire)")
        }
    }
}

extension SentencePieceModel {
    /// What a GGUF keeps of a SentencePiece model, back as a `tokenizer.model` (ModelProto):
    /// the pieces (text, score, type), a BPE trainer spec with the special ids and byte fallback,
    /// and the normalizer llama.cpp applies, i.e. none besides the dummy prefix: name "identity",
    /// add_dummy_prefix as given, remove_extra_whitespaces false, escape_whitespaces true.
    static func serialize(pieces: [Piece], unkID: Int, bosID: Int?, eosID: Int?, padID: Int?, byteFallback: Bool,
                          addDummyPrefix: Bool) -> [UInt8] {
        var out: [UInt8] = []
        for p in pieces {
            var m: [UInt8] = []
            ProtobufWriter.bytes(1, Array(p.text.utf8), into: &m)
            ProtobufWriter.fixed32(2, p.score.bitPattern, into: &m)
            ProtobufWriter.varint(3, UInt64(p.type), into: &m)
            ProtobufWriter.bytes(1, m, into: &out)
        }
        var trainer: [UInt8] = []
        ProtobufWriter.varint(3, 2, into: &trainer)                        // model_type BPE
        ProtobufWriter.varint(4, UInt64(pieces.count), into: &trainer)     // vocab_size
        ProtobufWriter.varint(35, byteFallback ? 1 : 0, into: &trainer)    // byte_fallback
        for (field, id) in [(40, unkID), (41, bosID ?? -1), (42, eosID ?? -1), (43, padID ?? -1)] {
            ProtobufWriter.varint(field, UInt64(bitPattern: Int64(id)), into: &trainer)
        }
        ProtobufWriter.bytes(2, trainer, into: &out)
        var normalizer: [UInt8] = []
        ProtobufWriter.bytes(1, Array("identity".utf8), into: &normalizer)
        ProtobufWriter.varint(3, addDummyPrefix ? 1 : 0, into: &normalizer)
        ProtobufWriter.varint(4, 0, into: &normalizer)
        ProtobufWriter.varint(5, 1, into: &normalizer)
        ProtobufWriter.bytes(3, normalizer, into: &out)
        return out
    }
}

/// Protocol-buffer wire format, as much as writing a ModelProto needs.
enum ProtobufWriter {
    static func raw(_ v: UInt64, into out: inout [UInt8]) {
        var v = v
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }
    static func varint(_ field: Int, _ v: UInt64, into out: inout [UInt8]) { raw(UInt64(field << 3), into: &out); raw(v, into: &out) }
    static func fixed32(_ field: Int, _ v: UInt32, into out: inout [UInt8]) {
        raw(UInt64(field << 3 | 5), into: &out)
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }
    static func bytes(_ field: Int, _ b: [UInt8], into out: inout [UInt8]) {
        raw(UInt64(field << 3 | 2), into: &out)
        raw(UInt64(b.count), into: &out)
        out.append(contentsOf: b)
    }
}
