/// A dense row-major f32 matrix: the one shape every kernel here takes.
public struct Matrix: Sendable, Equatable {
    public let rows: Int
    public let cols: Int
    public var data: [Float]

    public init(rows: Int, cols: Int, data: [Float]) {
        precondition(data.count == rows * cols, "Matrix: \(data.count) values for \(rows)x\(cols)")
        self.rows = rows; self.cols = cols; self.data = data
    }
    public init(rows: Int, cols: Int, repeating v: Float = 0) {
        self.init(rows: rows, cols: cols, data: Array(repeating: v, count: rows * cols))
    }
    public subscript(r: Int, c: Int) -> Float {
        get { data[r * cols + c] }
        set { data[r * cols + c] = newValue }
    }
    public var transposed: Matrix {
        var t = Matrix(rows: cols, cols: rows)
        data.withUnsafeBufferPointer { s in
            t.data.withUnsafeMutableBufferPointer { d in
                for r in 0..<rows { for c in 0..<cols { d[c * rows + r] = s[r * cols + c] } }
            }
        }
        return t
    }
    public static func identity(_ n: Int) -> Matrix {
        var m = Matrix(rows: n, cols: n)
        for i in 0..<n { m[i, i] = 1 }
        return m
    }
}

/// LAPACK reported a failure (a bad argument is a programming error; info > 0 is non-convergence).
public struct LinalgError: Error, CustomStringConvertible {
    public let routine: String
    public let info: Int32
    public var description: String {
        info > 0 ? "\(routine) did not converge (info=\(info))" : "\(routine): invalid argument \(-info)"
    }
}
