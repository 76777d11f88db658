import XCTest
@testable import Surgery
import SafeTensors
import Linalg

final class ParameterGrammarTests: XCTestCase {
    func testGradientsInterpolateOverLayers() {
        let g = ParameterSetting.gradient([0.0, 0.5, 0.3, 0.7, 1.0])
        XCTAssertEqual(g.evaluate(tensor: "x", t: 0)?.double, 0)
        XCTAssertEqual(g.evaluate(tensor: "x", t: 1)?.double, 1)
        XCTAssertEqual(g.evaluate(tensor: "x", t: 0.3)!.double!, 0.5 * 0.8 + 0.3 * 0.2, accuracy: 1e-12)  // s = 1.2
        XCTAssertEqual(ParameterSetting.steps([.string("a"), .string("b")]).evaluate(tensor: "x", t: 0.99), .string("a"))
    }

    func testFiltersAreSubstringsAndTheFirstMatchWins() throws {
        let yaml: [Any] = [["filter": "self_attn", "value": [0.0, 1.0]], ["filter": "attn", "value": 7], ["value": 0.5]]
        let p = try ParameterSetting.parse(yaml, path: "t")
        XCTAssertEqual(p.evaluate(tensor: "model.layers.0.self_attn.q_proj.weight", t: 0.25)?.double, 0.25)
        XCTAssertEqual(p.evaluate(tensor: "model.layers.0.cross_attn.q.weight", t: 0.25)?.double, 7)
        XCTAssertEqual(p.evaluate(tensor: "lm_head.weight", t: 0)?.double, 0.5)
        let noDefault = try ParameterSetting.parse([["filter": "mlp", "value": 1]], path: "t")
        XCTAssertNil(noDefault.evaluate(tensor: "lm_head.weight", t: 0))  // falls through to the next level
    }

    func testBadShapesAreUsageErrors() {
        XCTAssertThrowsError(try ParameterSetting.parse([1, "a", ["value": 1]], path: "weight"))
        XCTAssertThrowsError(try ParameterSetting.parse(["filter": "x"], path: "weight"))
        XCTAssertThrowsError(try ParameterSetting.parse(["filter": "x", "value": 1, "typo": 2], path: "weight"))
    }

    func testNearestName() {
        XCTAssertEqual(nearest("dare-ties", in: ["ties", "dare_ties", "linear"]), "dare_ties")
        XCTAssertEqual(nearest("densty", in: ["density", "weight"]), "density")
        XCTAssertNil(nearest("zzzzzzzz", in: ["density", "weight"]))
    }
}

final class MergePlanTests: XCTestCase {
    let mk = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Fixtures/mergekit").standardized.path

    func recipe(_ yaml: String) throws -> MergeRecipe { try MergeRecipe.load(yaml: yaml, path: mk + "/test.yml") }

    func testPerModelParametersWinOverGlobalOnes() throws {
        let plan = try MergePlan(recipe: try recipe("""
            merge_method: ties
            base_model: models/base
            models:
              - model: models/ft1
                parameters: {weight: 1.0, density: 0.8}
              - model: models/ft2
                parameters: {weight: [0.0, 1.0]}
            parameters: {density: 0.5, normalize: false}
            """), outDType: .BF16)
        let item = plan.items.first { $0.output == "model.layers.1.mlp.up_proj.weight" }!
        XCTAssertEqual(item.perModel[0]["density"], .number(0.8))
        XCTAssertEqual(item.perModel[1]["density"], .number(0.5))
        XCTAssertEqual(item.perModel[1]["weight"], .number(1.0))   // layer 1 of 2: t = 1
        XCTAssertEqual(item.global["normalize"], .bool(false))
        XCTAssertEqual(item.global["lambda"], .number(1))          // the method's default
        XCTAssertEqual(item.dtype, .BF16)
        XCTAssertEqual(plan.items.first { $0.output == "model.embed_tokens.weight" }!.t, 0)
        XCTAssertEqual(plan.items.first { $0.output == "lm_head.weight" }!.t, 1)  // post weights at the end
    }

    func testSlicesStackLayersAndRemapNames() throws {
        let plan = try MergePlan(recipe: try recipe("""
            merge_method: passthrough
            slices:
              - sources: [{model: models/ft1, layer_range: [0, 2]}]
              - sources:
                  - model: models/ft2
                    layer_range: [1, 2]
                    parameters:
                      scale: [{filter: o_proj, value: 0.5}, {value: 1.0}]
            """), outDType: nil)
        XCTAssertEqual(plan.layerCount, 3)
        let l2 = plan.items.first { $0.output == "model.layers.2.self_attn.o_proj.weight" }!
        XCTAssertEqual(l2.models.map(\.tensor), ["model.layers.1.self_attn.o_proj.weight"])
        XCTAssertEqual(l2.perModel[0]["scale"], .number(0.5))
        XCTAssertEqual(plan.modelPaths[l2.models[0].model].hasSuffix("ft2"), true)
        XCTAssertEqual(plan.items.filter { LayerName($0.output)?.index == 2 }.count, 9)
        XCTAssertEqual(Set(plan.items.suffix(2).map(\.output)), ["lm_head.weight", "model.norm.weight"])
    }

    func expectUsageError(_ yaml: String, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try MergePlan(recipe: try recipe(yaml), outDType: nil), file: file, line: line) { e in
            XCTAssertTrue(e is UsageError, "\(e)", file: file, line: line)
            XCTAssertTrue("\(e)".contains(fragment), "'\(e)' lacks '\(fragment)'", file: file, line: line)
        }
    }

    func testFailFastErrors() {
        expectUsageError("merge_method: tie\nbase_model: models/base\nmodels: [models/ft1]", "did you mean 'ties'")
        expectUsageError("merge_method: ties\nbase_model: models/base\nmodels:\n  - model: models/ft1\n    parameters: {weight: 1, densty: 0.5}",
                         "did you mean 'density'")
        expectUsageError("merge_method: slerp\nbase_model: models/base\nmodels: [models/base, models/ft1]", "missing required parameter 't'")
        expectUsageError("merge_method: ties\nmodels: [models/ft1]\nparameters: {weight: 1}", "needs base_model")
        expectUsageError("merge_method: linear\nmodels: [org/some-model-7b]\nparameters: {weight: 1}", "does not download")
        expectUsageError("merge_method: linear\nmodels: [models/ft1+adapters/x]\nparameters: {weight: 1}", "LoRA")
        expectUsageError("merge_method: linear\nmodels:\n  - {model: models/ft1, parameters: {weight: 1}}\n  - {model: models/ft2, parameters: {weight: -1}}",
                         "the weights sum to 0")
        expectUsageError("merge_method: nearswap\nbase_model: models/base\nmodels: [models/ft1, models/ft2]\nparameters: {t: 0.1}", "exactly 1")
        expectUsageError("merge_method: linear\nmodels: [models/ft1]\nslices: []", "exactly one of")
        expectUsageError("merge_method: slerp\nbase_model: models/base\nmodels: [models/base, models/ft1]\nparameters: {t: abc}", "must be a number")
        expectUsageError("merge_method: ties\nbase_model: models/base\nmodels: [models/ft1]\nparameters: {weight: 1, density: 1.5}", "outside 0...1")
        expectUsageError("merge_method: karcher\nmodels: [models/ft1]\nparameters: {max_iter: -3}", "outside")
        expectUsageError("merge_method: della\nbase_model: models/base\nmodels: [models/ft1]\nparameters: {weight: 1, density: 0.1, epsilon: 0.2}",
                         "della needs")
    }

    func testUnknownKeysWarn() throws {
        let r = try recipe("merge_method: linear\nmodels: [models/ft1]\nparameters: {weight: 1}\nfoo: 1\nchat_template: chatml")
        XCTAssertTrue(r.warnings.contains { $0.contains("unknown key 'foo'") })
        XCTAssertTrue(r.warnings.contains { $0.contains("chat_template") })
    }

    /// tokenizer_source: a model reference or base is kept; union (vocabulary surgery) is refused.
    func testTokenizerSource() throws {
        XCTAssertEqual(try recipe("merge_method: linear\nmodels: [models/ft1]\ntokenizer_source: models/ft2").tokenizerSource, "models/ft2")
        XCTAssertEqual(try recipe("merge_method: linear\nmodels: [models/ft1]\ntokenizer: {source: base}").tokenizerSource, "base")
        XCTAssertThrowsError(try recipe("merge_method: linear\nmodels: [models/ft1]\ntokenizer_source: union"))
        XCTAssertThrowsError(try recipe("merge_method: linear\nmodels: [models/ft1]\ntokenizer: {source: base, tokens: {}}"))
    }
}

final class SparsifyTests: XCTestCase {
    func testTopKKeepsExactlyKWithTiesByIndex() {
        let x: [Float] = [1, -3, 2, 2, -2, 0.5]
        XCTAssertEqual(Sparsifier.topK(x, 3), [false, true, true, true, false, false])
        XCTAssertEqual(Sparsifier.topK(x, 0), Array(repeating: false, count: 6))
        var rng = SeededRNG(seed: 0, stream: "q")
        let big = (0..<10_001).map { _ in rng.nextGaussian() }
        let keep = Sparsifier.topK(big, 777)
        XCTAssertEqual(keep.filter { $0 }.count, 777)
        let threshold = big.map(abs).sorted(by: >)[776]
        XCTAssertTrue(zip(big, keep).allSatisfy { $1 == (abs($0) >= threshold) })
    }

    func testRandomSparsifierIsSeededByTensorAndModel() throws {
        let delta = (0..<4096).map { Float($0 % 17) - 8 }
        let p = TaskArithmeticPipeline(sparsifier: .random, electSign: false, normalize: false, lambda: 1, rescale: .l1)
        func run(_ seed: UInt64, _ name: String) throws -> [Float] {
            var ds = [delta, delta]
            return try p.run(deltas: &ds, shape: [4096], weights: [1, 1], densities: [0.5, 0.5], gammas: [0, 0],
                      epsilons: [0, 0], seed: seed, tensor: name).mixed
        }
        XCTAssertEqual(try run(1, "a"), try run(1, "a"))
        XCTAssertNotEqual(try run(1, "a"), try run(2, "a"))
        XCTAssertNotEqual(try run(1, "a"), try run(1, "b"))
    }
}
