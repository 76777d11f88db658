import SafeTensors

/// The 2-D weights of linear layers (what LoRA adapts): names with a layer index, ending in
/// .weight, not norms or embeddings; --include/--exclude replace the rule.
enum LowRankTargets {
    static func select(_ c: Checkpoint, _ selection: TensorSelection) -> [Checkpoint.Entry] {
        let byDefault = selection.include.isEmpty && selection.exclude.isEmpty
        return c.entries.filter { e in
            guard e.info.shape.count == 2, e.info.dtype.isFloatingPoint, e.info.count > 0 else { return false }
            if !byDefault { return selection.selects(e.name) }
            let n = e.name.lowercased()
            return e.name.hasSuffix(".weight") && LayerName(e.name) != nil && !n.contains("norm") && !n.contains("embed")
        }
    }
}
