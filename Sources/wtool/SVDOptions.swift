import ArgumentParser
import Surgery
import Linalg

/// Which SVD, and the randomized one's parameters: lowrank-svd's actions and principal pruning.
struct SVDOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("auto (default), exact (gesdd; converged subspace iteration on large matrices) or randomized.", valueName: "METHOD")) var svd: String = "auto"
    @Option(name: .long, help: ArgumentHelp("Randomized: extra columns (default 10).", valueName: "P")) var oversample: Int?
    @Option(name: .long, help: ArgumentHelp("Randomized: power iterations (default 2).", valueName: "Q")) var powerIters: Int?
    @Option(name: .long, help: ArgumentHelp("Randomized: seed (default 0).", valueName: "N")) var seed: UInt64?

    var method: TruncatedSVD.Method? { TruncatedSVD.Method(rawValue: svd) }

    /// None of these options was given (commands that use them for one method only refuse them
    /// for the others).
    var isDefault: Bool { svd == "auto" && oversample == nil && powerIters == nil && seed == nil }

    var choice: SVDChoice {
        var c = SVDChoice()
        c.method = method
        if let oversample { c.oversample = oversample }
        if let powerIters { c.powerIterations = powerIters }
        if let seed { c.seed = seed }
        return c
    }

    func validate() throws {
        guard svd == "auto" || method != nil else { throw ValidationError("--svd must be auto, exact or randomized") }
        guard (oversample ?? 0) >= 0, (powerIters ?? 0) >= 0 else { throw ValidationError("--oversample and --power-iters must be >= 0") }
        if method == .exact && (oversample != nil || powerIters != nil || seed != nil) {
            throw ValidationError("--oversample, --power-iters and --seed belong to the randomized SVD, not --svd exact")
        }
    }
}
