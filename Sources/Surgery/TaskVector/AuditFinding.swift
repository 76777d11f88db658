import SafeTensors

/// One thing `task-vector audit` found out of line, with the rule that raised it and a score on
/// one scale: robust z-scores for the statistical rules, fixed values for the structural ones.
public struct AuditFinding: Sendable {
    public enum Rule: String, Sendable, CaseIterable {
        /// NaN or Inf in the fine-tune: score 1000.
        case nonfinite
        /// A tensor whose shape differs from the base's, or present on one side only: score 100.
        case shapeChanged = "shape_changed"
        case onlyInBase = "only_in_base"
        case onlyInFineTune = "only_in_finetune"
        /// Stored in another dtype: score 1 (informational).
        case dtypeChanged = "dtype_changed"
        /// Embedding / output rows changed far more than the other rows (candidate trigger tokens).
        case tokenRow = "token_row"
        /// A row (output channel) or column (input feature) changed far more than its peers.
        case rowOutlier = "row_outlier"
        case columnOutlier = "column_outlier"
        /// One row or column holds at least half of the tensor's change: score 20 · share.
        case dominantRow = "dominant_row"
        case dominantColumn = "dominant_column"
        /// The tensor's change is out of line with the same tensor in the other layers.
        case siblingOutlier = "sibling_outlier"
        /// The change has a much lower stable rank than the same tensor's in the other layers.
        case lowRankChange = "low_rank_change"
        /// A fine-tune that looks like a merged LoRA (projections changed, at least half of the
        /// other tensors bit-identical) that also changed tensors a LoRA on the usual targets never
        /// touches: score 4.
        case outsideLoRATargets = "outside_lora_targets"
    }

    public let rule: Rule
    public let tensor: String
    public let score: Double
    public let message: String
    public let details: [(String, JSONValue)]

    public var json: JSONValue {
        .object([("rule", .string(rule.rawValue)), ("tensor", .string(tensor)), ("score", .double(score)),
                 ("message", .string(message))] + details)
    }
}
