/// The records of a zip archive as torch.save writes it: read from the central directory (the
/// local headers carry zero sizes), ZIP64 fields honoured, every offset checked against the file.
/// Only the layout is read here; what the records mean is TorchArchive's business.
struct ZipDirectory {
    struct Record {
        let name: String
        /// 0 = stored, 8 = deflated, ...
        let method: UInt16
        let compressedSize: Int
        let size: Int
        /// Where the record's data starts in the file.
        let dataOffset: Int
    }

    let records: [Record]

    init(_ b: UnsafeRawBufferPointer, file: String) throws {
        func fail(_ m: String) -> FormatError { FormatError(file: file, "damaged zip archive: \(m)") }
        func u16(_ o: Int) throws -> Int {
            guard o >= 0, o + 2 <= b.count else { throw fail("a header runs past the end of the file") }
            return Int(UInt16(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt16.self)))
        }
        func u32(_ o: Int) throws -> Int {
            guard o >= 0, o + 4 <= b.count else { throw fail("a header runs past the end of the file") }
            return Int(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt32.self)))
        }
        func u64(_ o: Int) throws -> Int {
            guard o >= 0, o + 8 <= b.count else { throw fail("a header runs past the end of the file") }
            let v = UInt64(littleEndian: b.loadUnaligned(fromByteOffset: o, as: UInt64.self))
            guard v <= UInt64(b.count) else { throw fail("an offset or size (\(v)) is larger than the file") }
            return Int(v)
        }
        // The end-of-central-directory record: 22 bytes plus a comment of at most 65535.
        var eocd = -1
        var o = b.count - 22
        while o >= max(0, b.count - 22 - 65535) {
            if try u32(o) == 0x0605_4b50 { eocd = o; break }
            o -= 1
        }
        guard eocd >= 0 else { throw fail("no end-of-central-directory record (truncated download?)") }
        var count = try u16(eocd + 10)
        var dirSize = try u32(eocd + 12)
        var dirOffset = try u32(eocd + 16)
        // ZIP64: a locator just before the EOCD points at the ZIP64 end record (torch always writes it).
        if eocd >= 20, try u32(eocd - 20) == 0x0706_4b50 {
            let end64 = try u64(eocd - 20 + 8)
            guard try u32(end64) == 0x0606_4b50 else { throw fail("the ZIP64 locator points at no ZIP64 end record") }
            count = try u64(end64 + 32)
            dirSize = try u64(end64 + 40)
            dirOffset = try u64(end64 + 48)
        }
        guard dirOffset <= b.count, dirSize <= b.count - dirOffset else { throw fail("the central directory lies outside the file") }
        guard count <= dirSize / 46 else { throw fail("the central directory claims \(count) records in \(dirSize) bytes") }
        var records: [Record] = []
        records.reserveCapacity(count)
        var p = dirOffset
        for _ in 0..<count {
            guard try u32(p) == 0x0201_4b50 else { throw fail("a central directory record has no signature") }
            let method = try u16(p + 10)
            var compressed = try u32(p + 20), size = try u32(p + 24)
            let nameLength = try u16(p + 28), extraLength = try u16(p + 30), commentLength = try u16(p + 32)
            var local = try u32(p + 42)
            guard p + 46 + nameLength + extraLength + commentLength <= dirOffset + dirSize else {
                throw fail("a central directory record runs past the directory")
            }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: b[(p + 46)..<(p + 46 + nameLength)]), as: UTF8.self)
            // ZIP64 extra field: the 64-bit values of the fields stored as 0xFFFFFFFF, in this order.
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = try u16(e), len = try u16(e + 2)
                guard e + 4 + len <= extraEnd else { throw fail("record '\(name)': an extra field runs past its header") }
                if id == 1 {
                    var f = e + 4
                    if size == 0xFFFF_FFFF { guard f + 8 <= e + 4 + len else { throw fail("record '\(name)': short ZIP64 field") }; size = try u64(f); f += 8 }
                    if compressed == 0xFFFF_FFFF { guard f + 8 <= e + 4 + len else { throw fail("record '\(name)': short ZIP64 field") }; compressed = try u64(f); f += 8 }
                    if local == 0xFFFF_FFFF { guard f + 8 <= e + 4 + len else { throw fail("record '\(name)': short ZIP64 field") }; local = try u64(f); f += 8 }
                }
                e += 4 + len
            }
            guard try u32(local) == 0x0403_4b50 else { throw fail("record '\(name)': no local header at offset \(local)") }
            let data = local + 30 + (try u16(local + 26)) + (try u16(local + 28))
            guard data <= b.count, compressed <= b.count - data else { throw fail("record '\(name)' runs past the end of the file") }
            records.append(Record(name: name, method: UInt16(method), compressedSize: compressed, size: size, dataOffset: data))
            p += 46 + nameLength + extraLength + commentLength
        }
        self.records = records
    }
}
