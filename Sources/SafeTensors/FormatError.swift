/// A problem with a checkpoint on disk. Its description is the one line users see:
/// `<file>: <tensor>: <what is wrong>` (the tensor part only when one is involved).
public struct FormatError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let tensor: String?
    public let message: String

    public init(file: String, tensor: String? = nil, _ message: String) {
        self.file = file
        self.tensor = tensor
        self.message = message
    }

    public var description: String {
        var s = file + ": "
        if let tensor { s += "tensor '\(tensor)': " }
        return s + message
    }
}
