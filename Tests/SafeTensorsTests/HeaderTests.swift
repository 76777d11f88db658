import XCTest
@testable import SafeTensors

/// Builds a file image: 8-byte length + header text + payload.
func fileImage(_ header: String, payload: [UInt8] = [], n: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var out = [UInt8]()
    withUnsafeBytes(of: (n ?? UInt64(h.count)).littleEndian) { out.append(contentsOf: $0) }
    return out + h + payload
}

func parse(_ image: [UInt8]) throws -> Header {
    try image.withUnsafeBytes { try HeaderParser.parse(prefix: $0, fileSize: UInt64(image.count), file: "x") }
}

final class HeaderTests: XCTestCase {
    func expectError(_ image: [UInt8], _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try parse(image), file: file, line: line) { e in
            XCTAssertTrue("\(e)".contains(fragment), "'\(e)' lacks '\(fragment)'", file: file, line: line)
        }
    }

    func testValidFileSortsByOffsetWhateverTheJSONOrder() throws {
        let h = try parse(fileImage(#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                                    payload: Array(repeating: 0, count: 16)))
        XCTAssertEqual(h.tensors.map(\.name), ["a", "b"])
        XCTAssertEqual(h.dataLength, 16)
    }

    func testOrderOfChecksMatchesTheReference() {
        expectError([1, 2, 3], "header too small")
        expectError(fileImage("{}", n: 100_000_001), "header too large")
        expectError(fileImage("{}", n: 100), "invalid header length")
        expectError(fileImage(#"{"t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}}"#, payload: Array(repeating: 0, count: 16)), "needs 24 bytes")
        expectError(fileImage(#"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, payload: Array(repeating: 0, count: 9)), "incomplete file")
    }

    func testIntegersAreExactUpTo2To64() throws {
        let h = try parse(fileImage(#"{"w":{"dtype":"I8","shape":[0,18446744073709551615],"data_offsets":[0,0]}}"#))
        XCTAssertEqual(h.tensors[0].shape, [0, UInt64.max])
        XCTAssertEqual(h.tensors[0].count, 0)
        expectError(fileImage(#"{"w":{"dtype":"I8","shape":[18446744073709551616],"data_offsets":[0,0]}}"#), "not an integer")
        expectError(fileImage(#"{"w":{"dtype":"F32","shape":[4611686018427387904,8],"data_offsets":[0,0]}}"#), "overflow")
    }

    func testStricterThanTheReference() {
        expectError(fileImage(#"{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, payload: [0]),
                    "names this tensor twice")
        expectError(Array("version https://git-lfs.github.com/spec/v1\n".utf8), "Git LFS pointer")
    }

    func testMetadataRules() throws {
        let h = try parse(fileImage(#"{"__metadata__":{"format":"pt"}}"#))
        XCTAssertEqual(h.metadata?.first?.1, "pt")
        XCTAssertNil(try parse(fileImage(#"{"__metadata__":null}"#)).metadata)
        expectError(fileImage(#"{"__metadata__":{"k":1}}"#), "is not a string")
        expectError(fileImage(#"{"__metadata__":{},"__metadata__":{}}"#), "duplicate field")
    }

    func testWhitespaceAroundTheObject() throws {
        XCTAssertEqual(try parse(fileImage("  {}  \n")).tensors.count, 0)
        expectError(fileImage("{}\u{0}\u{0}"), "trailing characters")
    }
}

final class JSONTests: XCTestCase {
    func testEscapesAndSurrogates() throws {
        XCTAssertEqual(try JSONParser.parse(#""a\u00e9\ud83d\ude00\n""#), .string("aé😀\n"))
        XCTAssertThrowsError(try JSONParser.parse(#""\ud800""#))
        XCTAssertThrowsError(try JSONParser.parse(#""\udc00x""#))
    }

    func testNumbersKeepTheirText() throws {
        XCTAssertEqual(try JSONParser.parse("18446744073709551615").uint64Value, UInt64.max)
        XCTAssertNil(try JSONParser.parse("18446744073709551616").uint64Value)
        XCTAssertNil(try JSONParser.parse("-1").uint64Value)
        XCTAssertNil(try JSONParser.parse("1.0").uint64Value)
        XCTAssertThrowsError(try JSONParser.parse("01"))
        XCTAssertThrowsError(try JSONParser.parse("1."))
    }

    func testWriterEscapesLikeSerde() {
        XCTAssertEqual(JSONValue.string("a\"b\\c\u{1}é").compact(), "\"a\\\"b\\\\c\\u0001é\"")
        XCTAssertEqual(JSONValue.object([("b", .int(1)), ("a", .double(.nan))]).pretty(), "{\n  \"a\": null,\n  \"b\": 1\n}")
    }
}
