import SafeTensors

/// `wtool quantize --dequantize`: a GGUF file or a compressed-tensors checkpoint (pack-quantized
/// ints, float-quantized fp8) back to float safetensors, tensor by tensor. Unquantized tensors are
/// copied (GGUF plain types converted); names stay as stored.
public struct DequantizeJob: Sendable {
    public var settings = JobSettings()
    public var input: String
    public var output: String
    /// Output float dtype (nil: the scales' dtype for compressed-tensors, f32 for GGUF).
    public var dtype: DType?

    public init(input: String, output: String) { self.input = input; self.output = output }

    /// One output tensor: its declaration and how to fill it.
    struct Item: Sendable {
        let tensor: OutputTensor
        let fill: @Sendable () throws -> [UInt8]
        let dequantized: Bool
    }

    @discardableResult
    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let items: [Item]
        var source: Checkpoint? = nil
        if GGUFFile.isGGUF(input) {
            let g = try GGUFFile(path: input)
            items = try ggufItems(g)
            report.inputs = [.object([("path", .string(input)), ("tensors", .int(g.tensors.count))])]
        } else {
            let c = try Checkpoint(path: input)
            source = c
            report.warnings += c.warnings
            items = try compressedTensorsItems(c)
            report.inputs = [RunReport.describe(c)]
        }
        let plan = try OutputPlan(path: output, shardSize: settings.shardSize, provenance: settings.provenance, inputs: source.map { [$0] } ?? [], part: settings.part)
        if let real = FileSystem.realPath(output), FileSystem.realPath(input) == real {
            throw FormatError(file: output, "is an input of this command; choose another output")
        }
        timer.lap("plan")
        let writer = try plan.writer(tensors: items.map(\.tensor))
        let progress = Progress(total: items.count, label: "dequantize", quiet: settings.quiet)
        do {
            _ = try Engine.map(count: items.count, threads: settings.threads, progress: progress) { i in
                guard writer.owns(i) else { return }
                let bytes = try items[i].fill()
                try bytes.withUnsafeBytes { try writer.write(tensor: i, $0) }
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        var copied: [String] = []
        if let source {
            copied = try plan.copyAuxiliaryFiles(from: source, weights: items.map(\.tensor), edit: { $0.remove("quantization_config") })
        }
        timer.lap("dequantize")
        report.output = .object([("path", .string(output)), ("files", .array(writer.shards.map { .string($0.displayPath) })),
                                 ("copied", .array(copied.map { .string($0) }))])
        report.tensors = items.map { .object([("name", .string($0.tensor.name)), ("dtype", .string($0.tensor.dtype.rawValue)),
                                              ("shape", .array($0.tensor.shape.map { .uint($0) })), ("dequantized", .bool($0.dequantized))]) }
        report.summary = [("tensors", .int(items.count)), ("dequantized", .int(items.filter(\.dequantized).count))]
        report.timing = timer.phases
        try plan.finish(report, reportPath: settings.reportPath)
        return report
    }


    private func ggufItems(_ g: GGUFFile) throws -> [Item] {
        let intTypes: [UInt32: DType] = [24: .I8, 25: .I16, 26: .I32, 27: .I64]
        return try g.tensors.map { t in
            if let d = intTypes[t.type] {
                _ = try g.bytes(t, byteCount: t.count * d.size!)
                return Item(tensor: OutputTensor(name: t.name, dtype: d, shape: t.shape), fill: { Array(try g.bytes(t, byteCount: t.count * d.size!)) }, dequantized: false)
            }
            guard let type = GGMLType.decodable(id: t.type) else {
                throw FormatError(file: g.path, tensor: t.name, "ggml type \(t.type) is not one wtool reads (\(GGMLType.decodable.map(\.name).joined(separator: ", ")))")
            }
            guard (t.dims.first ?? 1) % UInt64(type.blockSize) == 0 else {
                throw FormatError(file: g.path, tensor: t.name, "row length \(t.dims.first ?? 0) is not a multiple of \(type.name)'s block size \(type.blockSize)")
            }
            let n = t.count
            _ = try g.bytes(t, byteCount: type.rowBytes(n))  // checked now, read when written
            let out = dtype ?? type.plainDType ?? .F32
            return Item(tensor: OutputTensor(name: t.name, dtype: out, shape: t.shape), fill: {
                let b = try g.bytes(t, byteCount: type.rowBytes(n))
                var y = [Float](repeating: 0, count: n)
                y.withUnsafeMutableBufferPointer { type.decode(b.baseAddress!, count: n, into: $0.baseAddress!) }
                return encodeFloats(y, as: out)
            }, dequantized: type.isQuantized)
        }
    }

    private func compressedTensorsItems(_ c: Checkpoint) throws -> [Item] {
        let names = Set(c.tensorNames)
        var consumed = Set<String>()
        var items: [Item] = []
        func need(_ name: String) throws -> Checkpoint.Entry {
            guard let e = c.entry(name) else { throw FormatError(file: c.path, tensor: name, "missing: a compressed-tensors weight needs it") }
            return e
        }
        for e in c.entries {
            if e.name.hasSuffix(".weight_packed") {
                let prefix = String(e.name.dropLast("weight_packed".count))
                let scaleE = try need(prefix + "weight_scale"), shapeE = try need(prefix + "weight_shape")
                let zeroE = c.entry(prefix + "weight_zero_point")
                consumed.formUnion([prefix + "weight_scale", prefix + "weight_shape", prefix + "weight_zero_point"])
                let shape = decodeDoubles(c, shapeE).map { Int($0) }
                guard shape.count == 2, shape.allSatisfy({ $0 > 0 }), e.info.dtype == .I32, e.info.shape.count == 2, Int(e.info.shape[0]) == shape[0] else {
                    throw FormatError(file: c.filePath(of: e), tensor: e.name, "weight_packed \(e.info.shape) does not match weight_shape \(shape)")
                }
                let (rows, cols) = (shape[0], shape[1])
                let words = Int(e.info.shape[1])
                guard let bits = (1...8).first(where: { CompressedTensorsLayout.packedWords(cols, bits: $0) == words }) else {
                    throw FormatError(file: c.filePath(of: e), tensor: e.name, "\(words) words per row fit no bit width for \(cols) columns")
                }
                let groups = scaleE.info.count
                guard scaleE.info.dtype.isFloatingPoint, groups > 0, (rows * cols) % groups == 0, groups == 1 || groups % rows == 0 else {
                    throw FormatError(file: c.filePath(of: scaleE), tensor: scaleE.name, "\(groups) scales do not divide a \(rows)x\(cols) weight into groups")
                }
                let out = dtype ?? scaleE.info.dtype
                items.append(Item(tensor: OutputTensor(name: prefix + "weight", dtype: out, shape: [rows, cols]), fill: {
                    let q = CompressedTensorsLayout.unpack(c.bytes(e), rows: rows, cols: cols, bits: bits)
                    let scale = decodeFloats(c, scaleE)
                    var zero = [Float](repeating: 0, count: groups)
                    if let zeroE {
                        if zeroE.info.dtype == .I32 {
                            let z = CompressedTensorsLayout.unpackColumns(c.bytes(zeroE), rows: rows, cols: groups / rows, bits: bits)
                            zero = z.map { Float($0) }
                        } else {
                            zero = decodeFloats(c, zeroE)
                        }
                        guard zero.count == groups else { throw FormatError(file: c.filePath(of: zeroE), tensor: zeroE.name, "\(zero.count) zero points for \(groups) scales") }
                    }
                    let dq = IntegerQuantized(bits: bits, runLength: rows * cols / groups, q: q, scale: scale, zero: zero)
                    var y = [Float](repeating: 0, count: rows * cols)
                    y.withUnsafeMutableBufferPointer { dq.dequantize(into: $0.baseAddress!) }
                    return encodeFloats(y, as: out)
                }, dequantized: true))
            } else if e.info.dtype == .F8_E4M3, e.name.hasSuffix(".weight"), let scaleE = c.entry(String(e.name.dropLast("weight".count)) + "weight_scale") {
                consumed.insert(scaleE.name)
                let n = e.info.count, groups = scaleE.info.count
                guard groups > 0, n % groups == 0 else {
                    throw FormatError(file: c.filePath(of: scaleE), tensor: scaleE.name, "\(groups) scales do not divide \(n) values")
                }
                let out = dtype ?? (scaleE.info.dtype.isFloatingPoint && scaleE.info.dtype != .F8_E4M3 ? scaleE.info.dtype : .F32)
                items.append(Item(tensor: OutputTensor(name: e.name, dtype: out, shape: e.info.shape), fill: {
                    let codes = Array(c.bytes(e))
                    var y = [Float](repeating: 0, count: n)
                    y.withUnsafeMutableBufferPointer { FP8Quantization.dequantize(codes: codes, scale: decodeFloats(c, scaleE), runLength: n / groups, into: $0.baseAddress!) }
                    return encodeFloats(y, as: out)
                }, dequantized: true))
            }
        }
        guard !items.isEmpty else {
            throw FormatError(file: c.path, "holds no compressed-tensors weights (no '*.weight_packed', no fp8 '*.weight' with '*.weight_scale')")
        }
        let quantizedNames = Set(items.map(\.tensor.name))
        for e in c.entries where !consumed.contains(e.name) && !e.name.hasSuffix(".weight_packed") && !quantizedNames.contains(e.name) && names.contains(e.name) {
            items.append(Item(tensor: OutputTensor(name: e.name, dtype: e.info.dtype, shape: e.info.shape), fill: { Array(c.bytes(e)) }, dequantized: false))
        }
        return items
    }
}
