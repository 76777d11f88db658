@testable import Linalg

/// A Gaussian matrix from the seeded generator (the same numbers on every run).
func gaussianMatrix(_ r: Int, _ c: Int, seed: UInt64, stream: String) -> Matrix {
    var g = SeededRNG(seed: seed, stream: stream)
    return Matrix(rows: r, cols: c, data: (0..<(r * c)).map { _ in g.nextGaussian() })
}

/// The largest entry-wise difference of two matrices of one shape.
func maxAbsDifference(_ a: Matrix, _ b: Matrix) -> Float { zip(a.data, b.data).map { abs($0 - $1) }.max() ?? 0 }
