import SafeTensors
import Foundation

/// `task-vector audit`: where a fine-tune's change is concentrated and what is out of line, as a
/// ranked list of findings (the rules of `AuditFinding`). Statistics are robust z-scores of log
/// norms (`RobustStatistics`): rows against the other rows of the same tensor, tensors against
/// the same tensor in the other layers.
public struct AuditJob: Sendable {
    public var settings = JobSettings()
    public var fineTuned: String
    public var base: String?
    public var kind: TaskVectorSource.Kind = .auto
    /// Where token strings come from (default: the fine-tune's folder, then the base's).
    public var tokenizer: String?
    /// Findings at or above this are reported on stderr and count as passing.
    public var threshold = 8.0
    /// Rows (or columns) at or above this z are listed in a finding's details.
    public var rowThreshold = 4.0

    public init(fineTuned: String) { self.fineTuned = fineTuned }

    /// The names PEFT's LoRA usually targets (attention and MLP projections of common models).
    static let loraTargets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "qkv_proj", "gate_up_proj",
                              "c_attn", "c_proj", "c_fc", "query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h", "fc1", "fc2",
                              "out_proj", "Wqkv", "wqkv", "wo", "w1", "w2", "w3", "query", "key", "value"]

    static func isLoRATarget(_ name: String) -> Bool {
        let parts = name.split(separator: ".").map(String.init)
        return parts.count >= 2 && loraTargets.contains(parts[parts.count - 2]) && parts.last == "weight"
    }

    static func isTokenMatrix(_ name: String) -> Bool {
        ["embed_tokens.weight", "lm_head.weight", "wte.weight", "word_embeddings.weight", "embed_out.weight", "token_embd.weight",
         "shared.weight", "embed_in.weight"].contains { name == $0 || name.hasSuffix("." + $0) }
    }

    /// The name with its layer index replaced by `*`: tensors of one group are the same tensor in
    /// different layers.
    static func siblingKey(_ name: String) -> String? {
        var parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard let i = parts.firstIndex(where: { !$0.isEmpty && $0.allSatisfy(\.isNumber) }) else { return nil }
        parts[i] = "*"
        return parts.joined(separator: ".")
    }

    public func run() throws -> RunReport {
        var timer = PhaseTimer()
        var report = RunReport(command: settings.command)
        let tv = try TaskVectorSource(path: fineTuned, kind: kind)
        let b = try base.map { try Checkpoint(path: $0) }
        if !tv.isDelta && b == nil { throw UsageError("\(fineTuned) is a model, not a task vector: give --base") }
        let ft = tv.checkpoint
        var tokens: TokenStrings? = nil
        if let tokenizer {
            tokens = try TokenStrings(folder: tokenizer)
        } else {
            for folder in [ft.folder, b?.folder].compactMap({ $0 }) where tokens == nil {
                tokens = try? TokenStrings(folder: folder)
            }
        }
        var findings: [AuditFinding] = []
        // Structure: tensors on one side only, shapes and dtypes.
        var compared: [Checkpoint.Entry] = []
        for e in ft.entries where settings.selection.selects(e.name) {
            guard let b else {
                if e.info.dtype.isFloatingPoint { compared.append(e) }
                continue
            }
            guard let be = b.entry(e.name) else {
                findings.append(AuditFinding(rule: .onlyInFineTune, tensor: e.name, score: 100,
                                             message: "not in the base (shape \(e.info.shape))", details: []))
                continue
            }
            if be.info.shape != e.info.shape {
                findings.append(AuditFinding(rule: .shapeChanged, tensor: e.name, score: 100,
                                             message: "shape \(be.info.shape) in the base, \(e.info.shape) in the fine-tune",
                                             details: [("base_shape", .array(be.info.shape.map { .uint($0) })),
                                                       ("shape", .array(e.info.shape.map { .uint($0) }))]))
                continue
            }
            if be.info.dtype != e.info.dtype {
                findings.append(AuditFinding(rule: .dtypeChanged, tensor: e.name, score: 1,
                                             message: "stored as \(e.info.dtype.rawValue), the base as \(be.info.dtype.rawValue)", details: []))
            }
            if e.info.dtype.isFloatingPoint && be.info.dtype.isFloatingPoint { compared.append(e) }
        }
        if let b {
            for e in b.entries where settings.selection.selects(e.name) && ft.entry(e.name) == nil {
                findings.append(AuditFinding(rule: .onlyInBase, tensor: e.name, score: 100, message: "missing from the fine-tune", details: []))
            }
        }
        timer.lap("plan")
        let entries = compared
        let changes = try Engine.map(count: entries.count, threads: settings.threads,
                                     progress: Progress(total: entries.count, label: "audit", quiet: settings.quiet)) { i -> TensorChange in
            let e = entries[i]
            let values = decodeFloats(ft, e)
            ft.release(e)
            let bv: [Float]? = tv.isDelta ? nil : b.map { c in
                let be = c.entry(e.name)!
                defer { c.release(be) }
                return decodeFloats(c, be)
            }
            return TensorChange(name: e.name, shape: e.info.shapeInts, fineTuned: values, base: bv)
        }
        timer.lap("measure")
        findings += AuditJob.tensorFindings(changes, tokens: tokens, rowThreshold: rowThreshold)
        findings += AuditJob.siblingFindings(changes)
        findings += AuditJob.loraFindings(changes)
        findings.sort { $0.score != $1.score ? $0.score > $1.score : ($0.tensor, $0.rule.rawValue) < ($1.tensor, $1.rule.rawValue) }
        timer.lap("findings")
        report.inputs = (b.map { [RunReport.describe($0)] } ?? []) + [RunReport.describe(ft)]
        report.parameters = [("threshold", .double(threshold)), ("row_threshold", .double(rowThreshold)),
                             ("tokenizer", tokens == nil ? .null : .string(tokenizer ?? "auto")),
                             ("input_is", .string(tv.isDelta ? "task-vector" : "model"))]
        report.tensors = changes.map { c in
            var row: [(String, JSONValue)] = [("name", .string(c.name)), ("shape", .array(c.shape.map { .int($0) })),
                                              ("delta_norm", .double(c.deltaNorm)), ("base_norm", .double(c.baseNorm)),
                                              ("relative_change", .double(c.baseNorm > 0 ? c.deltaNorm / c.baseNorm : .nan)),
                                              ("nonfinite", .int(c.nonfinite))]
            if let sr = c.stableRank { row.append(("stable_rank", .double(sr))) }
            if !c.rowNorms.isEmpty {
                row.append(("max_row_z", .double(RobustStatistics.logZScores(c.rowNorms).max() ?? 0)))
                row.append(("max_column_z", .double(RobustStatistics.logZScores(c.columnNorms).max() ?? 0)))
            }
            return .object(row)
        }
        let passing = findings.filter { $0.score >= threshold }
        report.summary = [("tensors", .int(changes.count)), ("findings", .int(findings.count)),
                          ("above_threshold", .int(passing.count)), ("max_score", .double(findings.first?.score ?? 0)),
                          ("findings_ranked", .array(findings.map(\.json)))]
        report.timing = timer.phases
        return report
    }

    /// Per-tensor rules: non-finite values, rows and columns out of line, one row or column
    /// holding most of the change.
    static func tensorFindings(_ changes: [TensorChange], tokens: TokenStrings?, rowThreshold: Double) -> [AuditFinding] {
        var out: [AuditFinding] = []
        for c in changes {
            if c.nonfinite > 0 {
                out.append(AuditFinding(rule: .nonfinite, tensor: c.name, score: 1000,
                                        message: "\(c.nonfinite) NaN or Inf value(s) in the fine-tune", details: [("count", .int(c.nonfinite))]))
            }
            guard c.deltaNorm > 0, c.rowNorms.count >= 4 else { continue }
            let tokenMatrix = isTokenMatrix(c.name)
            for (axis, norms) in [("row", c.rowNorms), ("column", c.columnNorms)] where norms.count >= 4 {
                let z = RobustStatistics.logZScores(norms)
                let total = norms.reduce(0) { $0 + $1 * $1 }
                let order = z.indices.sorted { z[$0] != z[$1] ? z[$0] > z[$1] : $0 < $1 }
                guard let top = order.first else { continue }
                let listed = order.prefix(10).filter { z[$0] >= rowThreshold }
                let isTokens = tokenMatrix && axis == "row"
                let entries: [JSONValue] = listed.map { i in
                    var o: [(String, JSONValue)] = [("index", .int(i)), ("z", .double(z[i])), ("norm", .double(norms[i])),
                                                    ("share", .double(total > 0 ? norms[i] * norms[i] / total : 0))]
                    if isTokens, let t = tokens?[i] { o.append(("token", .string(t))) }
                    return .object(o)
                }
                if z[top] > 0 {
                    let rule: AuditFinding.Rule = isTokens ? .tokenRow : axis == "row" ? .rowOutlier : .columnOutlier
                    let what = isTokens ? "token \(top)" + (tokens?[top].map { " '\($0)'" } ?? "") : "\(axis) \(top)"
                    var message = "\(what) changed \(formatFixed(z[top], 1)) robust SDs above the other \(axis)s"
                    if listed.count > 1 {
                        let names = listed.dropFirst().prefix(4).map { i in isTokens ? (tokens?[i].map { "'\($0)'" } ?? "#\(i)") : "#\(i)" }
                        message += "; also " + names.joined(separator: ", ")
                    }
                    out.append(AuditFinding(rule: rule, tensor: c.name, score: z[top], message: message,
                                            details: [(axis + "s", .array(entries))]))
                }
                let heaviest = norms.indices.max { norms[$0] < norms[$1] }!
                let heaviestShare = total > 0 ? norms[heaviest] * norms[heaviest] / total : 0
                if heaviestShare >= 0.5 && norms.count >= 16 {
                    out.append(AuditFinding(rule: axis == "row" ? .dominantRow : .dominantColumn, tensor: c.name, score: 20 * heaviestShare,
                                            message: "\(axis) \(heaviest) carries \(formatFixed(100 * heaviestShare, 1))% of the tensor's change",
                                            details: [("index", .int(heaviest)), ("share", .double(heaviestShare))]))
                }
            }
        }
        return out
    }

    /// Rules across layers: a tensor's change norm (high side) and stable rank (low side) against
    /// the same tensor in the other layers (groups of at least 4).
    static func siblingFindings(_ changes: [TensorChange]) -> [AuditFinding] {
        var groups: [String: [Int]] = [:]
        for (i, c) in changes.enumerated() { if let k = siblingKey(c.name) { groups[k, default: []].append(i) } }
        var out: [AuditFinding] = []
        for key in groups.keys.sorted() {
            let members = groups[key]!
            guard members.count >= 4 else { continue }
            let norms = members.map { changes[$0].deltaNorm }
            let z = RobustStatistics.logZScores(norms)
            let med = RobustStatistics.median(norms) ?? 0
            for (k, i) in members.enumerated() where z[k] > 0 && norms[k] > 0 {
                out.append(AuditFinding(rule: .siblingOutlier, tensor: changes[i].name, score: z[k],
                                        message: "changed \(formatFixed(med > 0 ? norms[k] / med : .infinity, 2))x the median of \(key) (\(members.count) layers)",
                                        details: [("group", .string(key)), ("z", .double(z[k])), ("group_median_norm", .double(med))]))
            }
            let ranked = members.filter { changes[$0].stableRank != nil }
            guard ranked.count >= 4 else { continue }
            let ranks = ranked.map { changes[$0].stableRank! }
            let rz = RobustStatistics.zScores(ranks.map { log($0) }, minimumSpread: RobustStatistics.minimumLogSpread)
            let medRank = RobustStatistics.median(ranks) ?? 0
            for (k, i) in ranked.enumerated() where rz[k] < 0 {
                out.append(AuditFinding(rule: .lowRankChange, tensor: changes[i].name, score: -rz[k],
                                        message: "stable rank \(formatFixed(ranks[k], 2)) against a median of \(formatFixed(medRank, 2)) in \(key)",
                                        details: [("group", .string(key)), ("stable_rank", .double(ranks[k])), ("group_median", .double(medRank))]))
            }
        }
        return out
    }

    /// A merged LoRA changes its target projections and leaves every other tensor bit for bit as
    /// it was. When the projections changed and at least half of the other tensors are exactly
    /// unchanged, the other tensors that did change are ones a LoRA on the usual targets would not
    /// have touched (modules_to_save, or an edit made outside the adapter).
    static func loraFindings(_ changes: [TensorChange]) -> [AuditFinding] {
        let others = changes.filter { !isLoRATarget($0.name) }
        let untouched = others.filter { $0.deltaNorm == 0 && $0.nonfinite == 0 }.count
        guard changes.contains(where: { isLoRATarget($0.name) && $0.deltaNorm > 0 }), !others.isEmpty, 2 * untouched >= others.count else { return [] }
        return others.filter { $0.deltaNorm > 0 }.map { c in
            AuditFinding(rule: .outsideLoRATargets, tensor: c.name, score: 4,
                         message: "changed, although this looks like a merged LoRA (\(untouched) of \(others.count) tensors outside the projections are unchanged)",
                         details: [("delta_norm", .double(c.deltaNorm))])
        }
    }
}
