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
