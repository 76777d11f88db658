import XCTest
@testable import Surgery
import SafeTensors
import Linalg
#if canImport(Glibc)
import Glibc
#endif

final class QuantizeTests: XCTestCase {
    private func gaussian(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SeededRNG(seed: seed, stream: "quantize-tests")
        return (0..<n).map { _ in rng.nextGaussian() }
    }

    /// Every block type decodes its own encoding to within its step, and an all-zero block to zeros.
    func testBlockTypesRoundTripWithinTheirStep() {
        for t in GGMLType.quantized {
            let n = 4 * 256
            var x = gaussian(n, seed: 1)
            for i in 0..<256 { x[i] = 0 }
            var blob = [UInt8](repeating: 0, count: t.rowBytes(n)), y = [Float](repeating: 1, count: n)
            x.withUnsafeBufferPointer { p in blob.withUnsafeMutableBytes { t.encode(p.baseAddress!, count: n, into: $0.baseAddress!) } }
            blob.withUnsafeBytes { b in y.withUnsafeMutableBufferPointer { t.decode(b.baseAddress!, count: n, into: $0.baseAddress!) } }
            XCTAssertEqual(Array(y[0..<256]), [Float](repeating: 0, count: 256), t.name)
            let err = zip(x, y).map { abs($0 - $1) }.max()!
            // Half a step of the coarsest sub-block scale over N(0, 1) rows, plus clipping of the tails.
            let bounds: [String: Float] = ["q8_0": 0.05, "q2_k": 1.5, "q3_k": 0.9, "tq1_0": 4, "tq2_0": 4]
            let bound = bounds[t.name] ?? 0.6
            XCTAssertLessThan(err, bound, t.name)
        }
    }

    /// The dense bit stream round-trips for every width, along rows and along columns.
    func testCompressedTensorsPackingRoundTrips() {
        for bits in 1...8 {
            let (qmin, qmax) = IntegerQuantized.levels(max(bits, 1))
            let rows = 5, cols = 37
            let q = (0..<(rows * cols)).map { Int8(qmin + ($0 * 7) % (qmax - qmin + 1)) }
            let packed = CompressedTensorsLayout.pack(q, rows: rows, cols: cols, bits: bits)
            XCTAssertEqual(packed.count, rows * CompressedTensorsLayout.packedWords(cols, bits: bits))
            XCTAssertEqual(packed.withUnsafeBytes { CompressedTensorsLayout.unpack($0, rows: rows, cols: cols, bits: bits) }, q, "bits \(bits)")
            let byColumns = CompressedTensorsLayout.packColumns(q, rows: rows, cols: cols, bits: bits)
            XCTAssertEqual(byColumns.withUnsafeBytes { CompressedTensorsLayout.unpackColumns($0, rows: rows, cols: cols, bits: bits) }, q)
        }
        // The documented example: int4 row [4, -2, -1, 0, -1, 7, 0, -1] -> 0x78F7876C.
        let word = CompressedTensorsLayout.pack([4, -2, -1, 0, -1, 7, 0, -1], rows: 1, cols: 8, bits: 4)[0]
        XCTAssertEqual(UInt32(bitPattern: word), 0x78F7876C)
    }

    /// HQQ under the format's constraint keeps the best candidate, so it is never worse (squared
    /// error) than compressed-tensors' asymmetric RTN, and its zero points are integers in range.
    func testHQQNeverWorseThanRTNAndZerosAreIntegers() {
        let x = gaussian(64 * 256, seed: 2).map { $0 * $0 * $0 }  // heavy tails
        for bits in [2, 3, 4] {
            let r = x.withUnsafeBufferPointer { HQQ.quantize($0, runLength: 64, bits: bits, scaleDType: .F32) }
            func sse(_ q: IntegerQuantized) -> Double {
                var y = [Float](repeating: 0, count: x.count)
                y.withUnsafeMutableBufferPointer { q.dequantize(into: $0.baseAddress!) }
                return zip(x, y).reduce(0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
            }
            XCTAssertLessThan(sse(r.quantized), sse(r.rtn), "bits \(bits)")
            let (lo, hi) = IntegerQuantized.levels(bits)
            for z in r.quantized.zero {
                XCTAssertEqual(z, z.rounded(), "bits \(bits)")
                XCTAssert(Float(lo) <= z && z <= Float(hi), "bits \(bits)")
            }
            XCTAssertLessThanOrEqual(r.iterations, HQQ.maxIterations)
        }
    }

    /// What the GGUF writer lays out, the reader finds: metadata, shapes reversed, aligned data.
    func testGGUFWriterAndReaderAgree() throws {
        let dir = FileManagerless.temporaryFolder()
        let path = dir + "/t.gguf"
        let a: [UInt8] = Array(0..<72), b: [UInt8] = Array(repeating: 9, count: 10)
        let w = try GGUFWriter(path: path, metadata: [("general.name", .string("t")), ("x.list", .array(4, [.uint32(1), .uint32(2)]))],
                               tensors: [GGUFTensorInfo(name: "a", shape: [2, 32], type: 8, byteCount: 72),
                                         GGUFTensorInfo(name: "b", shape: [5], type: 1, byteCount: 10)])
        try a.withUnsafeBytes { try w.write(tensor: 0, $0) }
        try b.withUnsafeBytes { try w.write(tensor: 1, $0) }
        try w.commit()
        let g = try GGUFFile(path: path)
        XCTAssertEqual(g.value("general.name")?.string, "t")
        XCTAssertEqual(g.value("x.list"), .array(4, [.uint32(1), .uint32(2)]))
        XCTAssertEqual(g.tensors.map(\.dims), [[32, 2], [5]])
        XCTAssertEqual(g.tensors.map(\.offset), [0, 96])
        XCTAssertEqual(Array(try g.bytes(g.tensors[0], byteCount: 72)), a)
        XCTAssertEqual(Array(try g.bytes(g.tensors[1], byteCount: 10)), b)
        XCTAssertThrowsError(try g.bytes(g.tensors[1], byteCount: 1 << 20))
        XCTAssertThrowsError(try GGUFWriter(path: dir + "/long.gguf", metadata: [],
                                            tensors: [GGUFTensorInfo(name: String(repeating: "n", count: 64), shape: [1], type: 0, byteCount: 4)]))
    }

    func testSchemeTableParsesEveryListedName() {
        for name in QuantScheme.names { XCTAssertEqual(QuantScheme.parse(name)?.name, name) }
        XCTAssertNil(QuantScheme.parse("int9"))
        XCTAssertNil(QuantScheme.parse("q4_2"))
        XCTAssertEqual(QuantScheme.parse("q4_0")?.formats, [.gguf, .fake])
    }
}

/// A fresh temporary folder without Foundation.
enum FileManagerless {
    static func temporaryFolder() -> String {
        var tmpl = Array("/tmp/wtool-quantize-test.XXXXXX".utf8CString)
        let p = tmpl.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        return String(cString: p!)
    }
}
