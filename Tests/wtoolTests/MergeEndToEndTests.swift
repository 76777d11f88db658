import XCTest
import SafeTensors

final class MergeEndToEndTests: XCTestCase {
    var tmp = ""
    override func setUpWithError() throws {
        tmp = NSTemporaryDirectory() + "wtool-merge-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

    func writeModel(_ path: String, shape: [Int]) throws {
        let w = try CheckpointWriter(layout: .file(path), tensors: [OutputTensor(name: "layer.weight", dtype: .F32, shape: shape)], metadata: [:])
        try [UInt8](repeating: 0, count: shape.reduce(4, *)).withUnsafeBytes { try w.write(tensor: 0, $0) }
        try w.commit()
    }

    func testOutputFolderLooksLikeMergekits() throws {
        let out = tmp + "/merged"
        let r = try wtool(["merge", "--method", "task_arithmetic", "--base", fixture("tiny-llama/base"), fixture("tiny-llama/ft-a"),
                           fixture("tiny-llama/ft-sharded"), "--weight", "0.5,0.7", "--dtype", "bf16", "--shard-size", "20KB", "-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: out))
        for n in ["config.json", "generation_config.json", "tokenizer_config.json", "wtool-recipe.yml", "wtool-report.json",
                  "model.safetensors.index.json", "model-00001-of-00003.safetensors"] {
            XCTAssertTrue(names.contains(n), "\(n) missing from \(names)")
        }
        let cfg = try JSONParser.parse(try FileSystem.readAll(out + "/config.json"))
        XCTAssertEqual(cfg["torch_dtype"], .string("bfloat16"))
        let recipe = String(decoding: try FileSystem.readAll(out + "/wtool-recipe.yml"), as: UTF8.self)
        XCTAssertTrue(recipe.contains("merge_method: task_arithmetic") && recipe.contains("weight: 0.7"), recipe)
        let report = try JSONParser.parse(try FileSystem.readAll(out + "/wtool-report.json"))
        let row = report["tensors"]!.arrayValue!.first { $0["name"] == .string("model.layers.0.mlp.up_proj.weight") }!
        XCTAssertEqual(row["delta_norms"]?.arrayValue?.count, 2)
        XCTAssertEqual(row["delta_cosines"]?.arrayValue?.count, 1)
        XCTAssertNotNil(row["relative_change"]?.doubleValue)
        // The recipe written beside the output reproduces it.
        let again = try wtool(["merge", "--config", out + "/wtool-recipe.yml", "-o", tmp + "/again", "--shard-size", "20KB", "--quiet"])
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertEqual(try wtool(["diff", out, tmp + "/again"]).status, 0)
    }

    func testRandomMethodsDoNotDependOnThreads() throws {
        for t in ["1", "2", "3"] {
            let r = try wtool(["merge", "--config", fixture("mergekit/dare_ties.yml"), "-o", tmp + "/d\(t).safetensors",
                               "--seed", "11", "--threads", t, "--quiet"])
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        let a = try Data(contentsOf: URL(fileURLWithPath: tmp + "/d1.safetensors"))
        XCTAssertEqual(a, try Data(contentsOf: URL(fileURLWithPath: tmp + "/d2.safetensors")))
        XCTAssertEqual(a, try Data(contentsOf: URL(fileURLWithPath: tmp + "/d3.safetensors")))
        _ = try wtool(["merge", "--config", fixture("mergekit/dare_ties.yml"), "-o", tmp + "/other.safetensors", "--seed", "12", "--quiet"])
        XCTAssertNotEqual(a, try Data(contentsOf: URL(fileURLWithPath: tmp + "/other.safetensors")))
    }

    func testErrorsExitBeforeWritingAnything() throws {
        try writeModel(tmp + "/a.safetensors", shape: [2, 3])
        try writeModel(tmp + "/b.safetensors", shape: [3, 2])
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: tmp))
        let shape = try wtool(["merge", "--method", "linear", tmp + "/a.safetensors", tmp + "/b.safetensors", "--weight", "1", "-o", tmp + "/o"])
        XCTAssertEqual(shape.status, 1)
        XCTAssertTrue(shape.stderr.contains("layer.weight") && shape.stderr.contains("differs"), shape.stderr)
        XCTAssertEqual(shape.stderr.split(separator: "\n").count, 1, shape.stderr)
        let typo = try wtool(["merge", "--method", "dare-ties", "--base", tmp + "/a.safetensors", tmp + "/a.safetensors", "-o", tmp + "/o"])
        XCTAssertEqual(typo.status, 2)
        XCTAssertTrue(typo.stderr.contains("did you mean 'dare_ties'"), typo.stderr)
        let missing = try wtool(["merge", "--config", tmp + "/nope.yml", "-o", tmp + "/o"])
        XCTAssertEqual(missing.status, 1)
        let plan = try wtool(["merge", "--config", fixture("mergekit/ties.yml"), "-o", tmp + "/o", "--dry-run"])
        XCTAssertEqual(plan.status, 0, plan.stderr)
        XCTAssertTrue(plan.stdout.contains("\"density\"") && plan.stdout.contains("nothing written"), plan.stdout)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: tmp)), before)
    }
}
