/// Layer structure read from tensor names, the way mergekit infers unknown architectures: the
/// first purely numeric dotted component (`model.layers.12.mlp...`) is the layer index.
struct LayerName: Hashable {
    /// The name with the index replaced by a placeholder (`model.layers.{}.mlp.up_proj.weight`).
    let template: String
    let index: Int

    init?(_ name: String) {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard let k = parts.indices.dropLast().first(where: { i in !parts[i].isEmpty && parts[i].allSatisfy(\.isNumber) && parts[i].count < 7 }),
              let idx = Int(parts[k]) else { return nil }
        var p = parts.map(String.init)
        p[k] = "{}"
        template = p.joined(separator: ".")
        index = idx
    }

    static func name(_ template: String, _ index: Int) -> String {
        template.replacingOccurrences(of: "{}", with: String(index))
    }

    /// Non-layer tensors before the layers (embeddings) rather than after them (final norm, head).
    static func isPreLayer(_ name: String) -> Bool {
        let n = name.lowercased()
        return n.contains("embed") || n.contains(".wte.") || n.hasPrefix("wte.") || n.contains(".wpe.") || n.hasPrefix("wpe.")
    }
}
