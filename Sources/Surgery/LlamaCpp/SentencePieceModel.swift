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
