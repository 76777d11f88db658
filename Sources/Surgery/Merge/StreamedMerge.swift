import SafeTensors

/// One tensor's inputs, readable block by block as many times as a method needs (each pass decodes
/// again from the memory map), for merges of tensors too large to hold decoded. Blocks hold whole
/// rows (`rowLength` entries each) and at most `blockEntries` entries unless one row is longer.
struct StreamedMergeContext {
    typealias Reader = StreamedTaskArithmetic.Reader
    let tensor: String
    let shape: [Int]
    let base: Reader?
    let models: [Reader]
    let global: [String: ParamValue]
    let perModel: [[String: ParamValue]]
    let blockEntries: Int

    var count: Int { shape.reduce(1, *) }
    var rowLength: Int { shape.count >= 2 && shape[0] > 0 ? count / shape[0] : max(1, count) }
    var blockLength: Int { min(count, max(1, blockEntries / rowLength) * rowLength) }

    func number(_ name: String) -> Double { global[name]?.double ?? .nan }
    func flag(_ name: String) -> Bool { (global[name]?.double ?? 0) != 0 }
    func modelNumber(_ i: Int, _ name: String) -> Double { perModel[i][name]?.double ?? .nan }

    /// One pass: `body(start, length, base block or nil, model blocks)` for each block in order.
    /// The blocks are scratch the body may overwrite (the next pass decodes them again).
    func pass(_ body: (_ start: Int, _ length: Int, _ base: UnsafeMutablePointer<Float>?, _ models: [UnsafeMutablePointer<Float>]) throws -> Void) rethrows {
        let n = count, block = max(1, blockLength), M = models.count
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: block * (M + 1))
        defer { buf.deallocate() }
        let modelBlocks = (0..<M).map { buf + (1 + $0) * block }
        var start = 0
        while start < n {
            let len = min(block, n - start)
            base?(start, len, buf)
            for m in 0..<M { models[m](start, len, modelBlocks[m]) }
            try body(start, len, base == nil ? nil : buf, modelBlocks)
            start += len
        }
    }
}

/// A merge method that can also run on a `StreamedMergeContext`, giving the bytes its whole-tensor
/// `merge` gives: reductions summed block by block in the same association (`VectorMath.LaneSum`,
/// or sequential sums in index order where the whole-tensor code sums sequentially), and the same
/// per-entry arithmetic. `write(start, values)` takes the output block by block, in order.
protocol StreamedMergeMethod: MergeMethod {
    func mergeStreamed(_ c: StreamedMergeContext, write: (_ start: Int, _ values: UnsafeBufferPointer<Float>) throws -> Void) throws -> [(String, JSONValue)]
}
