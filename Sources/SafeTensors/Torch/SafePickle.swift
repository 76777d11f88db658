/// A pickle reader that executes nothing: it interprets the opcodes a `torch.save` state dict is
/// made of and evaluates only the globals that describe tensors and plain containers, by name,
/// from a fixed table. Any other global (`posix.system`, `builtins.eval`, a training script's
/// class...) stops the read with an error naming it, before anything else happens: nothing is
/// imported, called or constructed.
///
/// The accepted set follows torch's own `weights_only` unpickler (torch/_weights_only_unpickler.py):
/// protocols 2-5, the opcodes listed in `step`, and the globals in `Callable`.
public enum SafePickle {
    /// A storage as a persistent id names it: record `data/<key>` of the archive.
    public struct Storage: Sendable, Equatable {
        public let key: String
        /// nil for `torch.storage.UntypedStorage` (bytes; the tensor's dtype comes from v3's argument).
        public let dtype: TorchDType?
        /// Elements of `dtype`, or bytes when untyped.
        public let count: Int
    }

    /// A tensor view on a storage, in elements of its dtype.
    public struct Tensor: Sendable {
        public let storage: Storage
        public let dtype: TorchDType
        public let offset: Int
        public let size: [Int]
        public let stride: [Int]
    }

    /// What a pickle evaluates to. Lists and dicts live in the reader's arena (by index), so a
    /// pickle that puts a container inside itself makes no reference cycle.
    public indirect enum Value: Sendable {
        case none
        case bool(Bool)
        case int(Int64)
        /// An integer too large for 64 bits (kept only as a marker: tensors never need one).
        case bigInt
        case float(Double)
        case string(String)
        case bytes([UInt8])
        case tuple([Value])
        case list(Int)
        case dict(Int)
        case callable(Callable)
        case storage(Storage)
        case tensor(Tensor)
    }

    /// The globals a pickle may name. Anything else is refused at its GLOBAL opcode.
    public enum Callable: Sendable, Equatable {
        case orderedDict
        case rebuildTensor, rebuildTensorV2, rebuildTensorV3
        case rebuildParameter, rebuildParameterWithState, rebuildFromTypeV2
        case tensorClass, parameterClass
        case storageType(TorchDType?)
        case dtype(TorchDType?)
        case codecsEncode, builtinSet, builtinBytearray, torchSize
    }

    /// The evaluated pickle: its root value and the arena its containers live in.
    public struct Result: Sendable {
        public let root: Value
        public let lists: [[Value]]
        public let dicts: [[(Value, Value)]]
    }

    public struct Refusal: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Evaluates `data` (a whole pickle). Throws `Refusal` with a one-line reason.
    public static func load(_ data: UnsafeRawBufferPointer) throws -> Result {
        var m = Machine(data: data)
        return try m.run()
    }

    /// The global's meaning, or nil when wtool refuses it.
    static func callable(module rawModule: String, name rawName: String) -> Callable? {
        // Python 2 names, as protocol 2 writes them (torch maps these the same way).
        let module = ["__builtin__": "builtins", "copy_reg": "copyreg"][rawModule] ?? rawModule
        switch (module, rawName) {
        case ("collections", "OrderedDict"): return .orderedDict
        case ("torch._utils", "_rebuild_tensor"): return .rebuildTensor
        case ("torch._utils", "_rebuild_tensor_v2"): return .rebuildTensorV2
        case ("torch._utils", "_rebuild_tensor_v3"): return .rebuildTensorV3
        case ("torch._utils", "_rebuild_parameter"): return .rebuildParameter
        case ("torch._utils", "_rebuild_parameter_with_state"): return .rebuildParameterWithState
        case ("torch._tensor", "_rebuild_from_type_v2"): return .rebuildFromTypeV2
        case ("torch", "Tensor"): return .tensorClass
        case ("torch.nn.parameter", "Parameter"): return .parameterClass
        case ("torch.storage", "UntypedStorage"): return .storageType(nil)
        case ("_codecs", "encode"): return .codecsEncode
        case ("builtins", "set"): return .builtinSet
        case ("builtins", "bytearray"): return .builtinBytearray
        case ("torch", "Size"): return .torchSize
        default: break
        }
        // Typed storages (`torch.FloatStorage`, old files' `torch.cuda.HalfStorage`): torch maps
        // every such name through one table whatever the module.
        if module == "torch" || module == "torch.cuda", rawName.hasSuffix("Storage"),
           let t = TorchDType.storageNames[String(rawName.dropLast("Storage".count))] {
            return .storageType(t)
        }
        if module == "torch", let t = TorchDType.dtypeNames[rawName] { return .dtype(t) }
        return nil
    }

    private struct Machine {
        let data: UnsafeRawBufferPointer
        var pos = 0
        var stack: [Value] = []
        var marks: [Int] = []
        var memo: [Int: Value] = [:]
        var lists: [[Value]] = []
        var dicts: [[(Value, Value)]] = []
        /// Bounds on what a hostile pickle can make us hold (beyond what its length already bounds).
        let maxMemo = 1 << 22, maxDims = 64

        init(data: UnsafeRawBufferPointer) { self.data = data }

        func refuse(_ m: String) -> Refusal { Refusal(description: m) }

        mutating func take(_ n: Int) throws -> UnsafeRawBufferPointer {
            guard n >= 0, n <= data.count - pos else { throw refuse("the pickle is truncated (at byte \(pos))") }
            defer { pos += n }
            return UnsafeRawBufferPointer(rebasing: data[pos..<(pos + n)])
        }
        mutating func byte() throws -> UInt8 { try take(1)[0] }
        mutating func le<T: FixedWidthInteger>(_: T.Type) throws -> T {
            T(littleEndian: try take(MemoryLayout<T>.size).loadUnaligned(as: T.self))
        }
        mutating func line() throws -> String {
            guard let nl = data[pos...].firstIndex(of: 0x0A) else { throw refuse("the pickle is truncated inside a GLOBAL name") }
            defer { pos = nl + 1 }
            return String(decoding: UnsafeRawBufferPointer(rebasing: data[pos..<nl]), as: UTF8.self)
        }
        mutating func pop() throws -> Value {
            guard let v = stack.popLast() else { throw refuse("the pickle pops an empty stack (at byte \(pos))") }
            if let m = marks.last, stack.count < m { throw refuse("the pickle pops past a MARK (at byte \(pos))") }
            return v
        }
        mutating func popMark() throws -> [Value] {
            guard let m = marks.popLast(), m <= stack.count else { throw refuse("the pickle has no MARK where one is needed (at byte \(pos))") }
            defer { stack.removeSubrange(m...) }
            return Array(stack[m...])
        }
        mutating func put(_ index: Int) throws {
            guard let top = stack.last else { throw refuse("the pickle memoizes an empty stack") }
            guard memo.count < maxMemo || memo[index] != nil else { throw refuse("the pickle's memo is implausibly large") }
            memo[index] = top
        }
        mutating func get(_ index: Int) throws {
            guard let v = memo[index] else { throw refuse("the pickle fetches memo entry \(index), which was never stored") }
            stack.append(v)
        }
        mutating func string(_ n: Int) throws -> String {
            String(decoding: try take(n), as: UTF8.self)
        }
        mutating func length<T: FixedWidthInteger>(_: T.Type) throws -> Int {
            let n = try le(T.self)
            guard n >= 0, UInt64(n) <= UInt64(data.count - pos) else { throw refuse("the pickle is truncated (a length of \(n) at byte \(pos))") }
            return Int(n)
        }

        mutating func run() throws -> Result {
            while true {
                let at = pos
                let op = try byte()
                switch op {
                case 0x80: // PROTO
                    let p = try byte()
                    guard p >= 2 && p <= 5 else { throw refuse("pickle protocol \(p) is not supported (torch.save writes 2)") }
                case 0x95: _ = try take(8) // FRAME: a length hint only
                case 0x2E: // STOP
                    guard marks.isEmpty, stack.count == 1 else { throw refuse("the pickle ends with \(stack.count) values on its stack") }
                    return Result(root: stack[0], lists: lists, dicts: dicts)
                case 0x28: marks.append(stack.count) // MARK
                case 0x30: _ = try pop() // POP
                case 0x31: _ = try popMark() // POP_MARK
                case 0x32: // DUP
                    guard let t = stack.last else { throw refuse("the pickle duplicates an empty stack") }
                    stack.append(t)
                case 0x63: // GLOBAL
                    let module = try line(), name = try line()
                    try pushGlobal(module, name)
                case 0x93: // STACK_GLOBAL
                    guard case let .string(name) = try pop(), case let .string(module) = try pop() else {
                        throw refuse("STACK_GLOBAL without two strings")
                    }
                    try pushGlobal(module, name)
                case 0x71: try put(Int(try byte())) // BINPUT
                case 0x72: try put(Int(try le(UInt32.self))) // LONG_BINPUT
                case 0x94: try put(memo.count) // MEMOIZE
                case 0x68: try get(Int(try byte())) // BINGET
                case 0x6A: try get(Int(try le(UInt32.self))) // LONG_BINGET
                case 0x29: stack.append(.tuple([])) // EMPTY_TUPLE
                case 0x74: stack.append(.tuple(try popMark())) // TUPLE
                case 0x85: stack.append(.tuple([try pop()])) // TUPLE1
                case 0x86: let b = try pop(), a = try pop(); stack.append(.tuple([a, b]))
                case 0x87: let c = try pop(), b = try pop(), a = try pop(); stack.append(.tuple([a, b, c]))
                case 0x5D: lists.append([]); stack.append(.list(lists.count - 1)) // EMPTY_LIST
                case 0x8F: lists.append([]); stack.append(.list(lists.count - 1)) // EMPTY_SET (a list will do)
                case 0x61: // APPEND
                    let v = try pop()
                    try append([v], at)
                case 0x65, 0x90: try append(try popMark(), at) // APPENDS, ADDITEMS
                case 0x7D: dicts.append([]); stack.append(.dict(dicts.count - 1)) // EMPTY_DICT
                case 0x73: // SETITEM
                    let v = try pop(), k = try pop()
                    try setItems([k, v], at)
                case 0x75: try setItems(try popMark(), at) // SETITEMS
                case 0x58: stack.append(.string(try string(try length(UInt32.self)))) // BINUNICODE
                case 0x8C: stack.append(.string(try string(Int(try byte())))) // SHORT_BINUNICODE
                case 0x8D: stack.append(.string(try string(try length(UInt64.self)))) // BINUNICODE8
                case 0x55: stack.append(.string(try string(Int(try byte())))) // SHORT_BINSTRING
                case 0x54: stack.append(.string(try string(try length(Int32.self)))) // BINSTRING
                case 0x43: stack.append(.bytes(Array(try take(Int(try byte()))))) // SHORT_BINBYTES
                case 0x42: stack.append(.bytes(Array(try take(try length(UInt32.self))))) // BINBYTES
                case 0x8E: stack.append(.bytes(Array(try take(try length(UInt64.self))))) // BINBYTES8
                case 0x4A: stack.append(.int(Int64(try le(Int32.self)))) // BININT
                case 0x4B: stack.append(.int(Int64(try byte()))) // BININT1
                case 0x4D: stack.append(.int(Int64(try le(UInt16.self)))) // BININT2
                case 0x8A: stack.append(try long(Int(try byte()))) // LONG1
                case 0x8B: stack.append(try long(try length(Int32.self))) // LONG4
                case 0x47: // BINFLOAT: big-endian
                    stack.append(.float(Double(bitPattern: UInt64(bigEndian: try take(8).loadUnaligned(as: UInt64.self)))))
                case 0x4E: stack.append(.none)
                case 0x88: stack.append(.bool(true))
                case 0x89: stack.append(.bool(false))
                case 0x51: stack.append(try persistent(try pop())) // BINPERSID
                case 0x52: // REDUCE
                    let args = try pop(), f = try pop()
                    guard case let .callable(c) = f, case let .tuple(a) = args else {
                        throw refuse("REDUCE on something that is not an accepted global (at byte \(at))")
                    }
                    stack.append(try call(c, a))
                case 0x81: // NEWOBJ: only a Parameter or Tensor wrapping a tensor
                    let args = try pop(), cls = try pop()
                    guard case let .callable(c) = cls, c == .parameterClass || c == .tensorClass,
                          case let .tuple(a) = args, case .tensor? = a.first else {
                        throw refuse("NEWOBJ of something other than a Parameter (at byte \(at))")
                    }
                    stack.append(a[0])
                case 0x62: // BUILD: the state of an OrderedDict (state_dict's _metadata) or a tensor is not needed
                    _ = try pop()
                    guard let top = stack.last else { throw refuse("BUILD on an empty stack") }
                    switch top {
                    case .dict, .tensor: break
                    default: throw refuse("BUILD on something other than a dict or tensor (at byte \(at))")
                    }
                default:
                    throw refuse("pickle opcode 0x\(String(op, radix: 16)) at byte \(at) is not accepted (torch.save never writes it)")
                }
                guard stack.count <= 1 << 24 else { throw refuse("the pickle's stack is implausibly deep") }
            }
        }

        mutating func pushGlobal(_ module: String, _ name: String) throws {
            guard let c = SafePickle.callable(module: module, name: name) else {
                throw refuse("it imports '\(module).\(name)', which is not a tensor type: refused (a pickle can run code through a global; wtool executes nothing from it)")
            }
            stack.append(.callable(c))
        }

        mutating func long(_ n: Int) throws -> Value {
            let b = try take(n)
            guard n <= 8 else { return .bigInt }
            guard n > 0 else { return .int(0) }
            var v: UInt64 = (b[n - 1] & 0x80) != 0 ? ~0 : 0
            for i in (0..<n).reversed() { v = (v << 8) | UInt64(b[i]) }
            return .int(Int64(bitPattern: v))
        }

        mutating func append(_ items: [Value], _ at: Int) throws {
            guard case let .list(i) = stack.last else { throw refuse("APPEND to something that is not a list (at byte \(at))") }
            lists[i] += items
        }

        mutating func setItems(_ kv: [Value], _ at: Int) throws {
            guard case let .dict(i) = stack.last else { throw refuse("SETITEM on something that is not a dict (at byte \(at))") }
            guard kv.count % 2 == 0 else { throw refuse("SETITEMS with an odd number of values (at byte \(at))") }
            for j in stride(from: 0, to: kv.count, by: 2) { dicts[i].append((kv[j], kv[j + 1])) }
        }

        func persistent(_ pid: Value) throws -> Value {
            guard case let .tuple(t) = pid, t.count == 5, case .string("storage") = t[0] else {
                throw refuse("a persistent id that is not a torch.save storage reference")
            }
            guard case let .callable(.storageType(dtype)) = t[1] else { throw refuse("a storage reference without a storage type") }
            guard case let .string(key) = t[2] else { throw refuse("a storage reference without a record key") }
            guard case let .int(n) = t[4], n >= 0 else { throw refuse("storage '\(key)' has no valid size") }
            return .storage(Storage(key: key, dtype: dtype, count: Int(n)))
        }

        func ints(_ v: Value, _ what: String) throws -> [Int] {
            guard case let .tuple(items) = v, items.count <= maxDims else { throw refuse("a tensor's \(what) is not a tuple of integers") }
            return try items.map {
                guard case let .int(x) = $0, x >= 0, x < 1 << 48 else { throw refuse("a tensor's \(what) holds \($0), not a size") }
                return Int(x)
            }
        }

        mutating func call(_ c: Callable, _ a: [Value]) throws -> Value {
            switch c {
            case .orderedDict:
                guard a.isEmpty else { throw refuse("OrderedDict called with arguments") }
                dicts.append([])
                return .dict(dicts.count - 1)
            case .rebuildTensor, .rebuildTensorV2, .rebuildTensorV3:
                let needed = c == .rebuildTensor ? 4 : c == .rebuildTensorV2 ? 6 : 7
                guard a.count == needed || (c != .rebuildTensor && a.count == needed + 1) else {
                    throw refuse("a tensor rebuild with \(a.count) arguments")
                }
                guard case let .storage(s) = a[0] else { throw refuse("a tensor rebuilt from something that is not a storage") }
                guard case let .int(offset) = a[1], offset >= 0, offset < 1 << 48 else { throw refuse("a tensor with an invalid storage offset") }
                let size = try ints(a[2], "size"), stride = try ints(a[3], "stride")
                guard size.count == stride.count else { throw refuse("a tensor whose size and stride differ in length") }
                var dtype = s.dtype
                if c == .rebuildTensorV3 {
                    guard case let .callable(.dtype(d)) = a[6] else { throw refuse("_rebuild_tensor_v3 without a dtype") }
                    dtype = d
                }
                guard let dtype else { throw refuse("a tensor of an untyped storage without a dtype") }
                if a.count == needed + 1, case let .dict(i) = a[needed], i >= 0, !dicts[i].isEmpty {
                    throw refuse("a tensor with conjugate or negative bits (a lazy view): save it materialized")
                }
                return .tensor(Tensor(storage: s, dtype: dtype, offset: Int(offset), size: size, stride: stride))
            case .rebuildParameter, .rebuildParameterWithState:
                guard case .tensor? = a.first else { throw refuse("a Parameter rebuilt from something that is not a tensor") }
                return a[0]
            case .rebuildFromTypeV2:
                guard a.count == 4, case let .callable(f) = a[0], case let .callable(type) = a[1],
                      type == .tensorClass || type == .parameterClass, case let .tuple(args) = a[2],
                      [.rebuildTensor, .rebuildTensorV2, .rebuildTensorV3, .rebuildParameter].contains(f) else {
                    throw refuse("a tensor subclass other than torch.Tensor or Parameter")
                }
                return try call(f, args)
            case .codecsEncode:
                guard a.count == 2, case let .string(s) = a[0], case .string("latin1") = a[1] else {
                    throw refuse("_codecs.encode called other than as torch writes bytes")
                }
                return .bytes(s.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) })
            case .builtinSet, .torchSize:
                return a.first ?? .tuple([])
            case .builtinBytearray:
                return a.first ?? .bytes([])
            case .tensorClass, .parameterClass, .storageType, .dtype:
                throw refuse("a type is called as a function (torch.save never does this)")
            }
        }
    }
}
