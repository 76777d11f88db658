import XCTest
@testable import Surgery
import Linalg

/// The merge's streamed task-arithmetic pass (blocks of rows, one probe pass drawing the kept sets
/// of every model that rescales by L1, remembered as bits, then the fused election) against the
/// whole-tensor pipeline (`TaskArithmeticPipeline.run`: each delta sparsified and rescaled on its
/// own, then elected and summed): the same bits, model by model, whatever the block size. Three
/// models with different deltas (one of a few sizes, multiples of 1/8 up to rounding; two Gaussian
/// of different scales), so a probe that read, drew or remembered for the wrong model gives other
/// kept sets, factors and outputs.
final class StreamedTaskArithmeticTests: XCTestCase {
    let rows = 7, cols = 301

    func testStreamedPassEqualsTheWholeTensorPipeline() throws {
        let n = rows * cols
        var rng = SeededRNG(seed: 21, stream: "streamed")
        let base = (0..<n).map { _ in rng.nextGaussian() }
        let models: [[Float]] = (0..<3).map { m in
            base.map { b in b + (m == 0 ? Float(Int(rng.next() % 7) - 3) * 0.125 : 0.1 * Float(m) * rng.nextGaussian()) }
        }
        let weights = [1.0, 0.5, 0.75], densities = [0.4, 0.6, 0.5], epsilons = [0.1, 0.2, 0.15]
        let cases: [(String, TaskArithmeticPipeline)] = [
            ("della, L1", TaskArithmeticPipeline(sparsifier: .dellaMagprune, electSign: true, normalize: true, lambda: 1, rescale: .l1)),
            ("della_linear, L1", TaskArithmeticPipeline(sparsifier: .dellaMagprune, electSign: false, normalize: true, lambda: 0.9, rescale: .l1)),
            ("dare_ties, L1", TaskArithmeticPipeline(sparsifier: .random, electSign: true, normalize: false, lambda: 1, rescale: .l1)),
            ("della, 1/p", TaskArithmeticPipeline(sparsifier: .dellaMagprune, electSign: true, normalize: true, lambda: 1, rescale: .inverseDensity)),
        ]
        for (name, pipeline) in cases {
            var deltas = models.map { zip($0, base).map { $0 - $1 } }
            let whole = try pipeline.run(deltas: &deltas, shape: [rows, cols], weights: weights, densities: densities, gammas: [0, 0, 0],
                                         epsilons: epsilons, seed: 4, tensor: "t")
            let expected = zip(whole.mixed, base).map { $0 + $1 }
            // one row a block, two and a third rows (DELLA's blocks hold whole rows: two), all of it
            for blockEntries in [cols, 2 * cols + 100, n] {
                func reader(_ v: [Float]) -> StreamedTaskArithmetic.Reader {
                    { start, count, into in v.withUnsafeBufferPointer { into.update(from: $0.baseAddress! + start, count: count) } }
                }
                let tasks = (0..<3).map { m in
                    StreamedTaskArithmetic.Task(read: reader(models[m]), isDelta: false, weight: weights[m], density: densities[m], gamma: 0,
                                                epsilon: epsilons[m])
                }
                let job = StreamedTaskArithmetic(pipeline: pipeline, shape: [rows, cols], base: reader(base), tasks: tasks, seed: 4, tensor: "t",
                                                 blockEntries: blockEntries)
                var out = [Float](repeating: .nan, count: n)
                let totals = try job.run { start, values in
                    for (i, v) in values.enumerated() { out[start + i] = v }
                }
                let differing = zip(out, expected).filter { $0.bitPattern != $1.bitPattern }.count
                XCTAssertEqual(differing, 0, "\(name), blocks of \(blockEntries): entries that differ from the whole-tensor pipeline's")
                XCTAssertEqual(totals.kept, whole.kept, "\(name), blocks of \(blockEntries)")
            }
        }
    }
}
