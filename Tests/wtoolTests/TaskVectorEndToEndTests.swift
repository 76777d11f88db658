import XCTest
import SafeTensors

final class TaskVectorEndToEndTests: XCTestCase {
    var tmp = ""
    override func setUpWithError() throws {
        tmp = NSTemporaryDirectory() + "wtool-tv-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: tmp) }

    func testAnotherBaseIsNamedInAWarning() throws {
        let tv = tmp + "/tv.safetensors"
        XCTAssertEqual(try wtool(["task-vector", "extract", "--base", fixture("tiny-llama/base"), fixture("tiny-llama/ft-a"), "-o", tv, "--quiet"]).status, 0)
        let r = try wtool(["task-vector", "apply", "--base", fixture("mergekit/models/base"), tv, "-o", tmp + "/o.safetensors"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("extracted from another base"), r.stderr)
        let same = try wtool(["task-vector", "apply", "--base", fixture("tiny-llama/base"), tv, "-o", tmp + "/p.safetensors"])
        XCTAssertFalse(same.stderr.contains("another base"), same.stderr)
    }

    func testMismatchesFailBeforeWriting() throws {
        // A task vector with a tensor the base lacks, and one of another shape.
        func write(_ path: String, _ name: String, _ shape: [Int]) throws {
            let w = try CheckpointWriter(layout: .file(path), tensors: [OutputTensor(name: name, dtype: .F32, shape: shape)], metadata: [:])
            try [UInt8](repeating: 0, count: shape.reduce(4, *)).withUnsafeBytes { try w.write(tensor: 0, $0) }
            try w.commit()
        }
        try write(tmp + "/extra.safetensors", "model.extra.weight", [2])
        try write(tmp + "/shape.safetensors", "model.norm.weight", [3])
        for (tv, fragment) in [("extra", "no counterpart in the base"), ("shape", "differs from the base")] {
            let r = try wtool(["task-vector", "apply", "--base", fixture("tiny-llama/base"), tmp + "/\(tv).safetensors", "-o", tmp + "/out"])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(fragment), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/out"))
        }
        let e = try wtool(["task-vector", "extract", "--base", fixture("tiny-llama/base"), tmp + "/extra.safetensors", "-o", tmp + "/out"])
        XCTAssertEqual(e.status, 1)
        XCTAssertTrue(e.stderr.contains("not in the base"), e.stderr)
        XCTAssertEqual(try wtool(["task-vector", "apply", "--base", fixture("tiny-llama/base"), tmp + "/extra.safetensors", "--method", "magic", "-o", tmp + "/out"]).status, 2)
        XCTAssertEqual(try wtool(["task-vector", "apply", "--base", fixture("tiny-llama/base"), fixture("tiny-llama/ft-a"), "--scale", "1,2", "-o", tmp + "/out"]).status, 2)
        XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/out"))
    }

    func testTrimmedExtractReportsItsError() throws {
        let r = try wtool(["task-vector", "extract", "--base", fixture("tiny-llama/base"), fixture("tiny-llama/ft-a"), "-o", tmp + "/tv",
                           "--density", "0.2", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let rep = try JSONParser.parse(try FileSystem.readAll(tmp + "/tv/wtool-report.json"))
        let errs = rep["tensors"]!.arrayValue!.compactMap { $0["trim_relative_error"]?.doubleValue }
        XCTAssertEqual(errs.count, 21)
        XCTAssertTrue(errs.allSatisfy { $0 > 0 && $0 < 1 }, "\(errs)")
        let tv = try Checkpoint(path: tmp + "/tv")
        let e = tv.entry("model.layers.0.mlp.up_proj.weight")!
        var v = [Float](repeating: 0, count: e.info.count)
        Codec.decode(.F32, tv.bytes(e).baseAddress!, count: v.count, into: &v)
        XCTAssertEqual(v.filter { $0 != 0 }.count, Int(0.2 * Double(v.count)))
    }
}
