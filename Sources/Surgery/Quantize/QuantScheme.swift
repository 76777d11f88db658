/// Where quantized tensors go.
public enum QuantFormat: String, Sendable, CaseIterable {
    /// A GGUF v3 file for llama.cpp.
    case gguf
    /// compressed-tensors safetensors (`pack-quantized` ints, `float-quantized` fp8) for vLLM.
    case compressedTensors = "compressed-tensors"
    /// Quantize then dequantize back into the original dtype (for evaluating the error).
    case fake
}

/// What a tensor is quantized to. One table of traits (formats, defaults) drives the generic code.
public enum QuantScheme: Sendable, Equatable {
    /// A llama.cpp block type (bit-exact with ggml's reference encoders).
    case ggml(GGMLType)
    /// A llama-quantize file type: each tensor's block type chosen by llama.cpp's rules (--llama-cpp).
    case mix(QuantMix)
    /// Round-to-nearest signed integers, 2...8 bits.
    case integer(bits: Int)
    /// HQQ-optimised zero points on 2...8-bit integers.
    case hqq(bits: Int)
    /// {-1, 0, 1} · γ per tensor.
    case ternary(Ternary.Scale)
    /// FP8 E4M3 with a per-tensor or per-row scale.
    case fp8
    /// StatsQ (the OFQ paper's statistical quantizer): 2^b mid-rise levels per output row scaled
    /// by 2 · mean|W|, 2...4 bits.
    case statsQ(bits: Int)

    public static func parse(_ s: String) -> QuantScheme? {
        let s = s.lowercased()
        if let t = GGMLType.named(s) { return .ggml(t) }   // f32/f16/bf16 too: a float GGUF
        if let m = QuantMix(s) { return .mix(m) }
        switch s {
        case "ternary", "ternary-absmean": return .ternary(.absmean)
        case "ternary-median": return .ternary(.median)
        case "fp8", "fp8-e4m3", "f8_e4m3": return .fp8
        default: break
        }
        if s.hasPrefix("statsq"), let b = Int(s.dropFirst(6)), (2...4).contains(b) { return .statsQ(bits: b) }
        for (prefix, make) in [("int", QuantScheme.integer), ("hqq", QuantScheme.hqq)] where s.hasPrefix(prefix) {
            if let b = Int(s.dropFirst(prefix.count)), (2...8).contains(b) { return make(b) }
        }
        return nil
    }

    public var name: String {
        switch self {
        case let .ggml(t): return t.name
        case let .mix(m): return m.fileType.rawValue
        case let .integer(b): return "int\(b)"
        case let .hqq(b): return "hqq\(b)"
        case .ternary(.absmean): return "ternary"
        case .ternary(.median): return "ternary-median"
        case .fp8: return "fp8"
        case let .statsQ(b): return "statsq\(b)"
        }
    }

    public var formats: [QuantFormat] {
        switch self {
        case .ggml, .mix: return [.gguf, .fake]
        case .integer, .hqq, .ternary, .fp8, .statsQ: return [.compressedTensors, .fake]
        }
    }

    /// The granularity used when --granularity is not given.
    public func defaultGranularity(groupSize: Int) -> Granularity {
        switch self {
        case let .ggml(t): return .group(t.blockSize)
        case let .mix(m): return .group(m.defaultType.blockSize)
        case .integer, .hqq: return .group(groupSize)
        case .ternary: return .tensor
        case .fp8, .statsQ: return .channel
        }
    }

    public var allowsGranularity: Bool {
        switch self { case .integer, .hqq, .fp8: return true; case .ggml, .mix, .ternary, .statsQ: return false }
    }

    /// compressed-tensors' `type` and bit width.
    var storedBits: Int {
        switch self {
        case let .ggml(t): return Int(t.bitsPerWeight)
        case let .mix(m): return Int(m.defaultType.bitsPerWeight)
        case let .integer(b), let .hqq(b): return b
        case .ternary: return 2
        case .fp8: return 8
        // compressed-tensors has no mid-rise grid: the 2^b levels (k + ½)·s/n are stored exactly as
        // the odd integers 2k + 1 of a (b+1)-bit symmetric int with scale s / 2n
        case let .statsQ(b): return b + 1
        }
    }

    /// The block type of a ggml scheme, or a mix's default type.
    var blockType: GGMLType? {
        switch self { case let .ggml(t): return t; case let .mix(m): return m.defaultType; default: return nil }
    }

    public static let names = GGMLType.quantized.map(\.name) + ["f32", "f16", "bf16"] + QuantMix.names.filter { GGMLType.named($0) == nil } + ["int8", "int4", "int3", "int2", "hqq4", "hqq3", "hqq2", "ternary", "ternary-median", "fp8", "statsq4", "statsq3", "statsq2"]
}
