import XCTest
@testable import SafeTensors

final class WriterTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "wtool-writer-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ layout: OutputLayout, _ tensors: [OutputTensor], fill: (Int) -> [UInt8]) throws -> CheckpointWriter {
        let w = try CheckpointWriter(layout: layout, tensors: tensors, metadata: ["format": "pt", "b": "2"])
        for i in tensors.indices.reversed() {  // any order works: offsets are fixed up front
            try fill(i).withUnsafeBytes { try w.write(tensor: i, $0) }
        }
        try w.commit()
        return w
    }

    func testLayoutIsTheReferenceWritersAndReadsBack() throws {
        let ts = [OutputTensor(name: "z", dtype: .U8, shape: [3]), OutputTensor(name: "a", dtype: .F32, shape: [2]),
                  OutputTensor(name: "b", dtype: .BF16, shape: [1]), OutputTensor(name: "e", dtype: .F32, shape: [0])]
        let path = dir + "/x.safetensors"
        _ = try write(.file(path), ts) { i in Array(repeating: UInt8(i + 1), count: ts[i].byteCount) }
        let bytes = try FileSystem.readAll(path)
        let n = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(n % 8, 0)
        let text = String(decoding: bytes[8..<(8 + Int(n))], as: UTF8.self)
        XCTAssertTrue(text.hasPrefix(#"{"__metadata__":{"b":"2","format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[8,8]},"b":{"dtype":"BF16""#), text)
        let f = try SafeTensorsFile(path: path)
        XCTAssertEqual(f.tensors.map(\.name), ["a", "e", "b", "z"])
        XCTAssertEqual(Array(f.bytes(f.info("z")!)), [1, 1, 1])
        XCTAssertEqual(FileSystem.list(dir), ["x.safetensors"])  // no temporaries left
    }

    func testShardsFollowHuggingFacesGreedySplit() throws {
        let ts = (0..<5).map { OutputTensor(name: "t\($0)", dtype: .F32, shape: [$0 == 2 ? 100 : 10]) }
        // huggingface_hub appends an oversized tensor's own shard at once, before the open shard
        // is closed, so it comes first.
        XCTAssertEqual(CheckpointWriter.splitIntoShards(ts, maxBytes: 90), [[2], [0, 1], [3, 4]])
        XCTAssertEqual(CheckpointWriter.splitIntoShards(ts, maxBytes: 1000), [[0, 1, 2, 3, 4]])
        let w = try write(.folder(dir + "/m", shardSize: 90), ts) { i in Array(repeating: 7, count: ts[i].byteCount) }
        XCTAssertEqual(w.shards.count, 3)
        XCTAssertEqual(CheckpointWriter.shardName(2, of: 3), "model-00002-of-00003.safetensors")
        let c = try Checkpoint(path: dir + "/m")
        XCTAssertEqual(Set(c.tensorNames), Set(ts.map(\.name)))
        XCTAssertTrue(c.warnings.isEmpty, "\(c.warnings)")
        // Re-writing the folder unsharded removes the stale shards and index.
        _ = try write(.folder(dir + "/m", shardSize: nil), ts) { i in Array(repeating: 7, count: ts[i].byteCount) }
        XCTAssertEqual(FileSystem.list(dir + "/m"), ["model.safetensors"])
    }

    /// Write-behind asks once per 64 MiB written, counting across writes of any size.
    func testWriteBehindCountsEvery64MiB() {
        var b = WriteBehind()
        XCTAssertFalse(b.add(WriteBehind.bytes - 1))
        XCTAssertTrue(b.add(1))
        XCTAssertFalse(b.add(1))
        XCTAssertTrue(b.add(3 * WriteBehind.bytes))   // one request however much was written at once
        XCTAssertFalse(b.add(WriteBehind.bytes / 2))
        XCTAssertFalse(b.add(WriteBehind.bytes / 2 - 1))
        XCTAssertTrue(b.add(1))
    }

    /// A file of more than 64 MiB (write-behind requested on the way) reads back byte for byte.
    func testLargeFileWithWriteBehindReadsBack() throws {
        let n = (WriteBehind.bytes + (1 << 20)) / 4
        let t = [OutputTensor(name: "big", dtype: .F32, shape: [n]), OutputTensor(name: "small", dtype: .F32, shape: [3])]
        let piece = 1 << 22
        let path = dir + "/big.safetensors"
        let w = try CheckpointWriter(layout: .file(path), tensors: t, metadata: ["format": "pt"])
        var at = 0
        while at < n * 4 {   // piece p holds the byte p + 1
            let len = min(piece, n * 4 - at)
            try [UInt8](repeating: UInt8(at / piece + 1), count: len).withUnsafeBytes { try w.write(tensor: 0, at: at, $0) }
            at += len
        }
        try [UInt8](repeating: 9, count: 12).withUnsafeBytes { try w.write(tensor: 1, $0) }
        try w.commit()
        let f = try SafeTensorsFile(path: path)
        let data = f.bytes(f.info("big")!)
        XCTAssertEqual(data.count, n * 4)
        var same = true
        for i in stride(from: 0, to: n * 4, by: 4093) where data[i] != UInt8(i / piece + 1) { same = false }
        XCTAssertTrue(same)
        XCTAssertEqual(Array(f.bytes(f.info("small")!)), [UInt8](repeating: 9, count: 12))
    }

    func testAbortLeavesNothing() throws {
        let w = try CheckpointWriter(layout: .folder(dir + "/new", shardSize: nil),
                                     tensors: [OutputTensor(name: "a", dtype: .F32, shape: [4])], metadata: [:])
        w.abort()
        XCTAssertEqual(FileSystem.kind(dir + "/new"), .missing)
    }

    func testIncompleteTensorIsAnErrorNotAFile() throws {
        let w = try CheckpointWriter(layout: .file(dir + "/y.safetensors"), tensors: [OutputTensor(name: "a", dtype: .F32, shape: [4])], metadata: [:])
        XCTAssertThrowsError(try w.commit())
        XCTAssertEqual(FileSystem.list(dir), [])
    }

    func testReservedAndDuplicateNamesAreRefused() {
        XCTAssertThrowsError(try CheckpointWriter(layout: .file(dir + "/r.safetensors"),
                                                  tensors: [OutputTensor(name: "__metadata__", dtype: .U8, shape: [1])], metadata: [:]))
        XCTAssertThrowsError(try CheckpointWriter(layout: .file(dir + "/r.safetensors"),
                                                  tensors: [OutputTensor(name: "a", dtype: .U8, shape: [1]), OutputTensor(name: "a", dtype: .U8, shape: [1])], metadata: [:]))
        XCTAssertEqual(FileSystem.list(dir), [])
    }
}
