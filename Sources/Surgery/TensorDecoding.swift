import SafeTensors

/// A tensor decoded to f32 (its mapped pages released afterwards).
public func decodeFloats(_ c: Checkpoint, _ e: Checkpoint.Entry) -> [Float] {
    decodeTensor(c, e) { Codec.decode($0, $1, count: $2, into: $3) }
}

/// A tensor decoded to f64 (exact for every float dtype).
public func decodeDoubles(_ c: Checkpoint, _ e: Checkpoint.Entry) -> [Double] {
    decodeTensor(c, e) { Codec.decode($0, $1, count: $2, into: $3) }
}

private func decodeTensor<T>(_ c: Checkpoint, _ e: Checkpoint.Entry,
                             _ decode: (DType, UnsafeRawPointer, Int, UnsafeMutablePointer<T>) -> Void) -> [T] {
    c.willNeed(e)
    let bytes = c.bytes(e)
    let v = [T](unsafeUninitializedCapacity: e.info.count) { buf, done in
        if let p = bytes.baseAddress { decode(e.info.dtype, p, e.info.count, buf.baseAddress!) }
        done = e.info.count
    }
    c.release(e)
    return v
}

/// f32 values encoded in a storage dtype.
func encodeFloats(_ v: [Float], as d: DType) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: v.count * d.size!)
    v.withUnsafeBufferPointer { p in out.withUnsafeMutableBytes { Codec.encode(p.baseAddress!, count: v.count, as: d, into: $0.baseAddress!) } }
    return out
}

extension CheckpointWriter {
    /// Encodes f32 values in a storage dtype and writes them as tensor `index`.
    public func write(floats v: [Float], as dtype: DType, tensor index: Int) throws {
        let bytes = v.count * dtype.size!
        let buf = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes), alignment: 64)
        defer { buf.deallocate() }
        v.withUnsafeBufferPointer { Codec.encode($0.baseAddress!, count: $0.count, as: dtype, into: buf) }
        try write(tensor: index, UnsafeRawBufferPointer(start: buf, count: bytes))
    }
}

/// Decodes entries [start, start + count) of a tensor to f32 straight from its memory map, block by
/// block, releasing the pages the blocks used a few MiB at a time (`TrailingRelease`; they stay
/// in the page cache for a later pass): a tensor larger than memory is streamed with a few blocks
/// resident.
public func blockReader(_ c: Checkpoint, _ e: Checkpoint.Entry) -> (_ start: Int, _ count: Int, _ into: UnsafeMutablePointer<Float>) -> Void {
    c.willNeed(e)
    let bytes = c.bytes(e).baseAddress!, size = e.info.dtype.size!, dtype = e.info.dtype
    var behind = TrailingRelease(c, e)
    return { start, count, dst in
        Codec.decode(dtype, bytes + start * size, count: count, into: dst)
        behind.done(with: start * size ..< (start + count) * size)
    }
}
