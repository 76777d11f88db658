import XCTest
import SafeTensors

/// Runs the built `wtool` binary (WTOOL_BIN, or .build/debug/wtool; `make test` builds it first).
struct Run {
    let status: Int32
    let stdout: String
    let stderr: String
}

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path

func wtool(_ args: [String]) throws -> Run {
    let bin = ProcessInfo.processInfo.environment["WTOOL_BIN"] ?? packageRoot + "/.build/debug/wtool"
    guard FileManager.default.isExecutableFile(atPath: bin) else {
        throw NSError(domain: "wtoolTests", code: 1, userInfo: [NSLocalizedDescriptionKey: "no wtool binary at \(bin): run 'swift build' first"])
    }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: bin)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

func fixture(_ p: String) -> String { packageRoot + "/Fixtures/" + p }

final class EndToEndTests: XCTestCase {
    var tmp = ""
    override func setUpWithError() throws {
        tmp = NSTemporaryDirectory() + "wtool-e2e-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

    func testEveryMalformedInputFailsWithOneLineAndWritesNothing() throws {
        let expected = try JSONParser.parse(try FileSystem.readAll(fixture("malformed/expected.json")))
        let cases = expected.objectValue!
        XCTAssertGreaterThanOrEqual(cases.count, 40)
        for (name, fragment) in cases {
            let out = tmp + "/out-" + name.replacingOccurrences(of: ".safetensors", with: "")
            let r = try wtool(["convert", fixture("malformed/" + name), "-o", out, "--dtype", "bf16"])
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(r.status, 1, name)
            XCTAssertEqual(lines.count, 1, "\(name): \(r.stderr)")
            XCTAssertTrue(r.stderr.hasPrefix("wtool: error: ") && r.stderr.contains(fragment.stringValue!), "\(name): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), name)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp), [])
    }

    func testValidEdgeCasesLoad() throws {
        let edge = try FileManager.default.contentsOfDirectory(atPath: fixture("edge")).sorted()
        XCTAssertGreaterThanOrEqual(edge.count, 10)
        for f in edge {
            let r = try wtool(["inspect", fixture("edge/" + f), "--stats", "--json"])
            XCTAssertEqual(r.status, 0, "\(f): \(r.stderr)")
            XCTAssertNotNil(try? JSONParser.parse(r.stdout), f)
        }
        let z = try JSONParser.parse(try wtool(["inspect", fixture("edge/zero-size.safetensors"), "--json"]).stdout)
        XCTAssertEqual(z["summary"]?["tensors"], .number("4"))
    }

    func testInspectReadsTheShardedFolder() throws {
        let r = try wtool(["inspect", fixture("tiny-llama/ft-sharded"), "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let j = try JSONParser.parse(r.stdout)
        XCTAssertEqual(j["summary"]?["tensors"], .number("21"))
        XCTAssertEqual(j["summary"]?["files"], .number("3"))
        XCTAssertEqual(j["warnings"], .array([]))
    }

    func testConvertToShardsAndBackIsLossless() throws {
        let r1 = try wtool(["convert", fixture("tiny-llama/ft-a"), "-o", tmp + "/sharded", "--shard-size", "16KB", "--quiet"])
        XCTAssertEqual(r1.status, 0, r1.stderr)
        XCTAssertEqual(r1.stderr, "")
        let names = try FileManager.default.contentsOfDirectory(atPath: tmp + "/sharded").sorted()
        XCTAssertTrue(names.contains("model.safetensors.index.json"), "\(names)")
        XCTAssertTrue(names.contains("config.json") && names.contains("tokenizer_config.json"), "\(names)")
        XCTAssertFalse(names.contains { $0.hasPrefix(".") }, "temporaries left: \(names)")
        let r2 = try wtool(["diff", fixture("tiny-llama/ft-a"), tmp + "/sharded"])
        XCTAssertEqual(r2.status, 0, r2.stdout + r2.stderr)
    }

    func testDiffStatuses() throws {
        XCTAssertEqual(try wtool(["diff", fixture("tiny-llama/base"), fixture("tiny-llama/base")]).status, 0)
        let d = try wtool(["diff", fixture("tiny-llama/base"), fixture("tiny-llama/ft-a"), "--json"])
        XCTAssertEqual(d.status, 1)
        let j = try JSONParser.parse(d.stdout)
        XCTAssertEqual(j["summary"]?["different"], .number("21"))
        XCTAssertEqual(try wtool(["diff", fixture("tiny-llama/ft-a"), fixture("tiny-llama/ft-bf16"), "--atol", "0.01"]).status, 0)
        XCTAssertEqual(try wtool(["diff", fixture("tiny-llama/base"), tmp + "/nope"]).status, 2)
        XCTAssertEqual(try wtool(["diff", fixture("tiny-llama/base")]).status, 2)
    }

    func testUsageErrorsExitTwo() throws {
        for args in [["convert", fixture("dtypes.safetensors"), "-o", tmp + "/x", "--dtype", "int4"],
                     ["convert", fixture("dtypes.safetensors"), "-o", tmp + "/x", "--shard-size", "big"],
                     ["convert", fixture("dtypes.safetensors"), "-o", tmp + "/x.safetensors", "--shard-size", "1GB"],
                     ["inspect", fixture("dtypes.safetensors"), "--no-such-flag"],
                     ["frobnicate"]] {
            let r = try wtool(args)
            XCTAssertEqual(r.status, 2, "\(args): \(r.stderr)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp), [])
        XCTAssertEqual(try wtool(["--help"]).status, 0)
        XCTAssertEqual(try wtool(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines), "0.1.0")
    }

    func testRefusesToWriteOverAnInput() throws {
        try FileManager.default.copyItem(atPath: fixture("tiny-llama/ft-a"), toPath: tmp + "/m")
        let before = try Data(contentsOf: URL(fileURLWithPath: tmp + "/m/model.safetensors"))
        let r = try wtool(["convert", tmp + "/m", "-o", tmp + "/m", "--dtype", "bf16"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: tmp + "/m/model.safetensors")), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp + "/m").sorted(),
                       ["config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"])
    }

    func testOutputIsByteIdenticalWhateverTheThreadCount() throws {
        for t in ["1", "2", "5"] {
            let r = try wtool(["convert", fixture("tiny-llama/ft-sharded"), "-o", tmp + "/t\(t).safetensors", "--dtype", "f16", "--threads", t, "--quiet"])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let a = try Data(contentsOf: URL(fileURLWithPath: tmp + "/t1.safetensors"))
        XCTAssertEqual(a, try Data(contentsOf: URL(fileURLWithPath: tmp + "/t2.safetensors")))
        XCTAssertEqual(a, try Data(contentsOf: URL(fileURLWithPath: tmp + "/t5.safetensors")))
    }

    func testDryRunPlansAndWritesNothing() throws {
        let r = try wtool(["convert", fixture("tiny-llama/base"), "-o", tmp + "/plan", "--dtype", "bf16", "--shard-size", "20KB", "--dry-run"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("model-00003-of-00003.safetensors"), r.stdout)
        XCTAssertTrue(r.stdout.contains("21 tensors, 21 converted, 45376 bytes in 3 file(s); nothing written"), r.stdout)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp), [])
        // A bad input still fails the dry run.
        XCTAssertEqual(try wtool(["convert", fixture("malformed/gap.safetensors"), "-o", tmp + "/plan", "--dry-run"]).status, 1)
    }
}
