import XCTest
@testable import Surgery
import SafeTensors

final class TensorStatsTests: XCTestCase {
    func testMomentsInF64OverFiniteValues() {
        var xs: [Float] = (0..<200_001).map { Float($0 % 97) - 40 }
        xs += [.nan, .infinity, 0]
        let s = TensorStats(dtype: .F32, bytes: xs, count: xs.count)
        let finite = xs.filter(\.isFinite).map(Double.init)
        let mean = finite.reduce(0, +) / Double(finite.count)
        let std = (finite.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(finite.count)).squareRoot()
        XCTAssertEqual(s.count, xs.count)
        XCTAssertEqual(s.nan, 1)
        XCTAssertEqual(s.inf, 1)
        XCTAssertEqual(s.mean, mean, accuracy: 1e-9)
        XCTAssertEqual(s.std, std, accuracy: 1e-9)
        XCTAssertEqual(s.min, -40)
        XCTAssertEqual(s.max, 56)
        XCTAssertEqual(s.l2, finite.map { $0 * $0 }.reduce(0, +).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(s.zeros, finite.filter { $0 == 0 }.count)
    }
}

final class HelpersTests: XCTestCase {
    func testShardSizesAreDecimalLikeHuggingFace() {
        XCTAssertEqual(ByteSize.parse("5GB"), 5_000_000_000)
        XCTAssertEqual(ByteSize.parse("500MB"), 500_000_000)
        XCTAssertEqual(ByteSize.parse("2GiB"), 2 << 30)
        XCTAssertEqual(ByteSize.parse("1.5kb"), 1500)
        XCTAssertEqual(ByteSize.parse("4096"), 4096)
        XCTAssertNil(ByteSize.parse("-1GB"))
        XCTAssertNil(ByteSize.parse("lots"))
        XCTAssertNil(ByteSize.parse("0"))
    }

    func testSelectionGlobs() {
        let s = TensorSelection(include: ["model.layers.*"], exclude: ["*norm*"])
        XCTAssertTrue(s.selects("model.layers.0.mlp.up_proj.weight"))
        XCTAssertFalse(s.selects("model.layers.0.input_layernorm.weight"))
        XCTAssertFalse(s.selects("lm_head.weight"))
        XCTAssertEqual(s.unusedPatterns(in: ["model.layers.1.x"]), ["*norm*"])
    }

    func testFixedFormatting() {
        XCTAssertEqual(formatFixed(1.23456, 2), "1.23")
        XCTAssertEqual(formatFixed(-0.005, 2), "-0.01")
        XCTAssertEqual(formatFixed(0.0001, 2), "0.00")
    }
}

final class EngineTests: XCTestCase {
    struct Boom: Error {}

    func testResultsComeBackInIndexOrderWhateverTheThreads() throws {
        for t in [1, 2, 7] {
            let r = try Engine.map(count: 1000, threads: t) { $0 * $0 }
            XCTAssertEqual(r, (0..<1000).map { $0 * $0 })
        }
    }

    func testFirstErrorIsRethrown() {
        XCTAssertThrowsError(try Engine.map(count: 100, threads: 2) { i -> Int in
            if i == 10 { throw Boom() }
            return i
        }) { XCTAssertTrue($0 is Boom) }
    }
}

final class ConvertTests: XCTestCase {
    func fixture(_ p: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fixtures/" + p).standardized.path
    }

    func testBF16RoundTripThroughF32IsExactAndTheReportMeasuresTheLoss() throws {
        let dir = NSTemporaryDirectory() + "wtool-convert-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var up = ConvertJob(input: fixture("tiny-llama/ft-bf16"), output: dir + "/f32")
        up.dtype = .F32
        try up.run()
        var down = ConvertJob(input: dir + "/f32", output: dir + "/bf16")
        down.dtype = .BF16
        down.settings.threads = 2
        let report = try down.run()
        let a = try Checkpoint(path: fixture("tiny-llama/ft-bf16")), b = try Checkpoint(path: dir + "/bf16")
        for e in a.entries {
            XCTAssertTrue(a.bytes(e).elementsEqual(b.bytes(b.entry(e.name)!)), e.name)
        }
        // bf16 -> f32 -> bf16 is exact, and the report measured zero error.
        for row in report.tensors { XCTAssertEqual(row["max_abs_error"], .number("0")) }
        XCTAssertEqual(FileSystem.kind(dir + "/bf16/config.json"), .file)
        XCTAssertEqual(FileSystem.kind(dir + "/bf16/wtool-report.json"), .file)
    }

    func testRefusesToOverwriteItsInput() throws {
        let dir = NSTemporaryDirectory() + "wtool-convert-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixture("dtypes.safetensors"), toPath: dir + "/a.safetensors")
        let before = try FileSystem.readAll(dir + "/a.safetensors")
        XCTAssertThrowsError(try ConvertJob(input: dir + "/a.safetensors", output: dir + "/a.safetensors").run())
        XCTAssertEqual(try FileSystem.readAll(dir + "/a.safetensors"), before)
    }
}
