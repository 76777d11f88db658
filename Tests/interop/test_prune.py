"""wtool prune-sparse masks against numpy references of each documented rule."""
import json, math, struct
import numpy as np
import ml_dtypes
import pytest
from safetensors.numpy import save_file
from conftest import run
from st_raw import read_raw, write_raw

NP = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def model(tmp_path, dtype="F32", ties=True):
    """A small LLaMA-like model; with ties, weights take few distinct values (many equal scores)."""
    rng = np.random.default_rng(5)
    shapes = {"model.embed_tokens.weight": (16, 32), "model.layers.0.self_attn.q_proj.weight": (8, 32),
              "model.layers.0.mlp.up_proj.weight": (16, 32), "model.layers.0.mlp.down_proj.weight": (32, 16),
              "model.layers.0.input_layernorm.weight": (32,), "model.layers.1.mlp.up_proj.weight": (16, 32),
              "lm_head.weight": (16, 32),
              # larger than one of the row path's pieces (2^16 entries): rows streamed in several pieces
              "model.layers.1.mlp.down_proj.weight": (300, 1000)}
    raw = {}
    for n, s in shapes.items():
        x = rng.standard_normal(s).astype(np.float32)
        if ties:
            x = np.round(x * 4) / 4
        raw[n] = (dtype, list(s), x.astype(NP[dtype]).tobytes())
    path = tmp_path / f"m-{dtype}.safetensors"
    write_raw(path, raw, metadata={"format": "pt"})
    return path


def tensors(path):
    return {k: np.frombuffer(d, dtype=NP[dt]).reshape(s).astype(np.float32) for k, (dt, s, d) in read_raw(path).items()}


def file_order(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return sorted(h, key=lambda k: h[k]["data_offsets"])


def is_target(name, shape):
    return len(shape) == 2 and ".layers." in name and "norm" not in name and "embed" not in name


def prune_first(scores, k):
    """The k smallest, ties lower index first: a stable ascending sort."""
    mask = np.zeros(scores.size, bool)
    mask[np.argsort(scores.ravel(), kind="stable")[:k]] = True
    return mask.reshape(scores.shape)


def reference_masks(w, scores, scope, sparsity, nm=None, order=None):
    if nm:
        n, m = nm
        out = {}
        for k, s in scores.items():
            g = s.reshape(s.shape[0], -1, m)
            idx = np.argsort(g, axis=2, kind="stable")[:, :, : m - n]
            mask = np.zeros_like(g, bool)
            np.put_along_axis(mask, idx, True, axis=2)
            out[k] = mask.reshape(s.shape)
        return out
    if scope == "tensor":
        return {k: prune_first(s, int(s.size * sparsity)) for k, s in scores.items()}
    if scope == "row":
        return {k: np.stack([prune_first(r, int(s.shape[1] * sparsity)) for r in s]) for k, s in scores.items()}
    names = [k for k in order if k in scores]
    flat = np.concatenate([scores[k].ravel() for k in names])
    mask = prune_first(flat, int(flat.size * sparsity))
    out, off = {}, 0
    for k in names:
        out[k] = mask[off: off + scores[k].size].reshape(scores[k].shape)
        off += scores[k].size
    return out


def check(tmp_path, src, out, masks, dtype="F32"):
    before, after = read_raw(src), read_raw(out)
    w = tensors(src)
    for k, (dt, s, data) in before.items():
        if k not in masks:
            assert after[k] == (dt, s, data), f"{k} is not a target and must be byte-identical"
            continue
        size = np.dtype(NP[dt]).itemsize
        got = np.frombuffer(after[k][2], np.uint8).reshape(-1, size)
        orig = np.frombuffer(data, np.uint8).reshape(-1, size)
        m = masks[k].ravel()
        assert np.all(got[m] == 0), f"{k}: pruned entries must be +0.0 (all-zero bytes)"
        assert np.array_equal(got[~m], orig[~m]), f"{k}: kept entries must be bit-identical"


@pytest.mark.parametrize("scope", ["tensor", "row", "global"])
@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_magnitude_masks_equal_numpy(tmp_path, scope, dtype):
    src = model(tmp_path, dtype)
    out = tmp_path / "out.safetensors"
    run("prune-sparse", src, "-o", out, "--sparsity", "0.37", "--scope", scope, "--quiet")
    w = tensors(src)
    scores = {k: np.abs(v) for k, v in w.items() if is_target(k, v.shape)}
    check(tmp_path, src, out, reference_masks(w, scores, scope, 0.37, order=file_order(src)), dtype)


@pytest.mark.parametrize("nm", [(2, 4), (4, 8)])
def test_nm_masks_equal_numpy_and_are_valid(tmp_path, nm):
    src = model(tmp_path, "BF16")
    out = tmp_path / "out.safetensors"
    run("prune-sparse", src, "-o", out, "--nm", f"{nm[0]}:{nm[1]}", "--quiet")
    w = tensors(src)
    scores = {k: np.abs(v) for k, v in w.items() if is_target(k, v.shape)}
    masks = reference_masks(w, scores, None, None, nm=nm)
    check(tmp_path, src, out, masks, "BF16")
    got = tensors(out)
    for k in scores:
        groups = (got[k] == 0).reshape(got[k].shape[0], -1, nm[1]).sum(axis=2)
        assert np.all(groups >= nm[1] - nm[0])


def wanda_inputs(tmp_path, scale=1.0):
    src = model(tmp_path, "F32", ties=False)
    w = tensors(src)
    rng = np.random.default_rng(9)
    stats = {k[: -len(".weight")] + ".act_sq_sum": (rng.random(w[k].shape[1]) ** 4 * 100 * scale).astype(np.float32)
             for k in sorted(w) if is_target(k, w[k].shape)}
    path = tmp_path / f"stats-{scale}.safetensors"
    save_file(stats, path)
    return src, w, stats, path


@pytest.mark.parametrize("scope,nm", [("row", None), ("tensor", None), (None, (2, 4))])
def test_wanda_masks_equal_numpy(tmp_path, scope, nm):
    src, w, stats, path = wanda_inputs(tmp_path)
    out = tmp_path / "out.safetensors"
    args = ["--nm", "2:4"] if nm else ["--scope", scope, "--sparsity", "0.5"]
    run("prune-sparse", src, "-o", out, "--method", "wanda", "--stats", path, *args, "--quiet")
    scores = {}
    for k, v in w.items():
        if is_target(k, v.shape):
            a = stats[k[: -len(".weight")] + ".act_sq_sum"].astype(np.float64)
            scores[k] = (np.abs(v).astype(np.float64) * np.sqrt(a / a.max())).astype(np.float32)
    check(tmp_path, src, out, reference_masks(w, scores, scope, 0.5, nm=nm))
    rep = json.load(open(tmp_path / "out.report.json"))
    assert all("estimated_relative_output_error" in r for r in rep["tensors"] if r["target"])


def prune_wanda_reference(W, act_sq_sum, sparsity):
    """A transcription of the Wanda authors' prune_wanda (locuslab/wanda lib/prune.py), unstructured:
    W_metric = |W| * sqrt(scaler_row); sort each output row; prune the first int(in * s)."""
    metric = np.abs(W.astype(np.float64)) * np.sqrt(act_sq_sum.astype(np.float64).reshape(1, -1))
    idx = np.argsort(metric, axis=-1, kind="stable")[:, : int(W.shape[1] * sparsity)]
    mask = np.zeros(W.shape, bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


@pytest.mark.parametrize("dsnot", [False, True])
def test_wanda_default_scope_is_per_output_row(tmp_path, dsnot):
    """No --scope: the masks of the paper (per output row), not per tensor; the report says row."""
    src, w, stats, path = wanda_inputs(tmp_path)
    out = tmp_path / "out.safetensors"
    run("prune-sparse", src, "-o", out, "--method", "wanda", "--stats", path, "--sparsity", "0.5", "--quiet")
    masks = {k: prune_wanda_reference(v, stats[k[: -len(".weight")] + ".act_sq_sum"], 0.5)
             for k, v in w.items() if is_target(k, v.shape)}
    check(tmp_path, src, out, masks)
    rep = json.load(open(tmp_path / "out.report.json"))
    assert rep["parameters"]["scope"] == "row"
    # the per-tensor masks differ on this model: the default really changed the grouping
    per_tensor = tmp_path / "tensor.safetensors"
    run("prune-sparse", src, "-o", per_tensor, "--method", "wanda", "--stats", path, "--sparsity", "0.5", "--scope", "tensor", "--quiet")
    assert json.load(open(tmp_path / "tensor.report.json"))["parameters"]["scope"] == "tensor"
    assert read_raw(per_tensor) != read_raw(out)
    if dsnot:
        # DSnoT refines Wanda masks row by row: its default group is the row too
        full = {**stats}
        for k in list(stats):
            m = k[: -len(".act_sq_sum")]
            full[m + ".act_mean"] = np.zeros_like(stats[k])
            full[m + ".act_var"] = stats[k]
        fpath = tmp_path / "full.safetensors"
        save_file(full, fpath)
        d = tmp_path / "dsnot.safetensors"
        run("prune-sparse", src, "-o", d, "--method", "wanda", "--stats", fpath, "--sparsity", "0.5", "--dsnot", "--quiet")
        assert json.load(open(tmp_path / "dsnot.report.json"))["parameters"]["scope"] == "row"
        got = tensors(d)
        for k in masks:
            assert np.all((got[k] == 0).sum(axis=1) >= int(w[k].shape[1] * 0.5))


def test_scaling_the_statistics_changes_nothing(tmp_path):
    src, _, _, p1 = wanda_inputs(tmp_path, 1.0)
    _, _, _, p2 = wanda_inputs(tmp_path, 1234.5)
    for p, o in ((p1, "a"), (p2, "b")):
        run("prune-sparse", src, "-o", tmp_path / f"{o}.safetensors", "--method", "wanda", "--stats", p, "--scope", "row", "--quiet")
    assert read_raw(tmp_path / "a.safetensors") == read_raw(tmp_path / "b.safetensors")


def test_principal_masks_equal_numpy(tmp_path):
    """wtool's scores come from an f32 SVD, numpy's from f64: the masks agree except where two
    entries of a row swap across the row's cut-off with scores within f32 rounding of it (seen:
    three such pairs in 300 rows of 1000, relative gaps 3e-6..2e-5, on one CPU family and none on
    another). Each row still prunes exactly its k; every other entry is as numpy decides."""
    src = model(tmp_path, "F32", ties=False)
    out = tmp_path / "out.safetensors"
    run("prune-sparse", src, "-o", out, "--method", "principal", "--rank", "3", "--scope", "row", "--sparsity", "0.75", "--quiet")
    w, got = tensors(src), tensors(out)
    before, after = read_raw(src), read_raw(out)
    swapped = 0
    for k, v in w.items():
        if not is_target(k, v.shape):
            assert after[k] == before[k], f"{k} is not a target and must be byte-identical"
            continue
        u, s, vt = np.linalg.svd(v.astype(np.float64), full_matrices=False)
        scores = np.abs((u[:, :3] * s[:3]) @ vt[:3])
        keep = int(v.shape[1] * 0.75)
        ref = np.stack([prune_first(r, keep) for r in scores])
        pruned = (got[k] == 0) & ~((v == 0) & ~ref)   # zeros numpy keeps read as kept
        assert np.all(pruned.sum(axis=1) == keep), f"{k}: every row prunes exactly {keep}"
        for r in np.unique(np.argwhere(pruned != ref)[:, 0]):
            cut = np.sort(scores[r])[keep - 1: keep + 1]
            near = np.abs(scores[r] - cut.mean()) <= 1e-4 * cut.mean() + 1e-12
            bad = (pruned[r] != ref[r]) & ~near
            assert not bad.any(), f"{k} row {r}: entries {np.flatnonzero(bad)} decided against numpy away from the cut-off"
            swapped += int((pruned[r] != ref[r]).sum()) // 2
        kept = ~pruned
        assert np.array_equal(got[k][kept].view(np.uint32), v[kept].view(np.uint32)), f"{k}: kept entries must be bit-identical"
        assert np.all(got[k][pruned].view(np.uint32) == 0), f"{k}: pruned entries must be +0.0"
    assert swapped <= 10, f"{swapped} swaps at the cut-off: more than rounding explains"


def test_soft_threshold_equals_numpy(tmp_path):
    src = model(tmp_path, "F32", ties=False)
    out = tmp_path / "out.safetensors"
    run("prune-sparse", src, "-o", out, "--method", "soft-threshold", "--sparsity", "0.4", "--quiet")
    w = tensors(src)
    names = [k for k in file_order(src) if is_target(k, w[k].shape)]
    mags = np.concatenate([np.abs(w[k]).ravel() for k in names])
    t = np.sort(mags, kind="stable")[int(mags.size * 0.4) - 1]
    got = tensors(out)
    for k in names:
        expect = np.sign(w[k]) * np.maximum(np.abs(w[k]) - t, 0)
        expect[expect == 0] = 0.0  # +0.0
        assert got[k].tobytes() == expect.astype(np.float32).tobytes(), k


def test_masks_file(tmp_path):
    src = model(tmp_path, "F16")
    run("prune-sparse", src, "-o", tmp_path / "o.safetensors", "--nm", "2:4", "--mask-out", tmp_path / "masks.safetensors", "--quiet")
    masks, got = read_raw(tmp_path / "masks.safetensors"), tensors(tmp_path / "o.safetensors")
    w = tensors(src)
    assert set(masks) == {k for k, v in w.items() if is_target(k, v.shape)}
    for k, (dt, s, data) in masks.items():
        keep = np.frombuffer(data, np.uint8).reshape(s).astype(bool)
        assert dt == "BOOL" and keep.mean() == 0.5
        assert np.array_equal(got[k][~keep], np.zeros((~keep).sum(), np.float32))
        assert np.array_equal(got[k][keep], w[k][keep])


def test_errors_name_the_tensor_and_write_nothing(tmp_path):
    src = model(tmp_path, "F32")
    out = tmp_path / "out"
    status, _, err = run("prune-sparse", src, "-o", out, "--nm", "2:3", check=False)
    assert status == 1 and "not divisible by M = 3" in err and "model.layers." in err
    status, _, err = run("prune-sparse", src, "-o", out, "--method", "wanda", check=False)
    assert status == 2 and "--stats" in err
    save_file({"model.layers.0.mlp.up_proj.act_sq_sum": np.ones(32, np.float32)}, tmp_path / "partial.safetensors")
    status, _, err = run("prune-sparse", src, "-o", out, "--method", "wanda", "--stats", tmp_path / "partial.safetensors", check=False)
    assert status == 1 and "no '<module>.act_sq_sum' statistics" in err
    assert not out.exists()
    status, _, _ = run("prune-sparse", src, "-o", out, "--method", "wanda", "--stats", tmp_path / "partial.safetensors",
                       "--fallback", "magnitude", "--quiet", check=False)
    assert status == 0
    status, _, err = run("prune-sparse", src, "-o", tmp_path / "x", "--method", "principal", check=False)
    assert status == 2 and "--rank" in err


def test_imatrix_gguf_gives_the_same_masks_as_the_safetensors_file(tmp_path):
    """llama.cpp's imatrix (written here with the gguf package): in_sum2 per GGUF tensor name, mapped
    to Hugging Face names; counts only rescale, so the masks equal those of act_sq_sum."""
    import gguf
    src, w, stats, path = wanda_inputs(tmp_path)
    names = {"self_attn.q_proj": "attn_q", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    writer = gguf.GGUFWriter(tmp_path / "imatrix.gguf", arch="llama")
    for key, v in stats.items():
        layer, part = key.split(".")[2], ".".join(key.split(".")[3:-1])
        g = f"blk.{layer}.{names[part]}.weight"
        writer.add_tensor(g + ".in_sum2", (v * 3.0).astype(np.float32))
        writer.add_tensor(g + ".counts", np.array([512], np.float32))
    writer.write_header_to_file(); writer.write_kv_data_to_file(); writer.write_tensors_to_file(); writer.close()
    for p, o in ((path, "st"), (tmp_path / "imatrix.gguf", "gguf")):
        run("prune-sparse", src, "-o", tmp_path / f"{o}.safetensors", "--method", "wanda", "--stats", p, "--scope", "row", "--quiet")
    assert read_raw(tmp_path / "st.safetensors") == read_raw(tmp_path / "gguf.safetensors")


def dsnot_reference(w, pruned, mean, var, wanda, nm=None, cycles=50, thr=0.1):
    """DSnoT for one row (numpy/python), the rule wtool-prune-sparse(1) documents."""
    pruned = pruned.copy()
    contrib = w.astype(np.float64) * mean
    err = contrib[pruned].sum()
    sign0 = np.sign(err)
    ratio = contrib / np.maximum(var, 1e-12)
    grow = sorted(np.nonzero(pruned)[0], key=lambda j: (ratio[j], j))
    kept = sorted(np.nonzero(~pruned)[0], key=lambda j: (wanda[j], j))
    neg = [j for j in kept if contrib[j] < 0]; pos = [j for j in kept if contrib[j] > 0]
    blocked = pruned.copy()
    lo, hi, ni, pi = 0, len(grow) - 1, 0, 0
    for _ in range(cycles):
        if not (abs(err) > thr and lo <= hi):
            break
        r = grow[hi] if err > 0 else grow[lo]
        if nm:
            start = r - r % nm[1]
            cand = [j for j in range(start, start + nm[1]) if not blocked[j]]
            if not cand:
                break
            p = min(cand, key=lambda j: (wanda[j], j))
        elif err < 0:
            if pi >= len(pos): break
            p = pos[pi]
        else:
            if ni >= len(neg): break
            p = neg[ni]
        after = err + contrib[p] - contrib[r]
        if np.sign(after) != sign0:
            break
        pruned[p], pruned[r], blocked[p] = True, False, True
        if not nm:
            if err < 0: pi += 1
            else: ni += 1
        if err > 0: hi -= 1
        else: lo += 1
        err = after
    return pruned


@pytest.mark.parametrize("cycles", [50, 3])   # 3: fewer than the candidates, only the ends are ordered
@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_dsnot_equals_numpy_and_keeps_counts(tmp_path, nm, cycles):
    src, w, stats, _ = wanda_inputs(tmp_path)
    rng = np.random.default_rng(11)
    full = dict(stats)
    for k in list(stats):
        module = k[: -len(".act_sq_sum")]
        full[module + ".act_mean"] = (rng.standard_normal(stats[k].size) * 0.5).astype(np.float32)
        full[module + ".act_var"] = (rng.random(stats[k].size) + 0.1).astype(np.float32)
    save_file(full, tmp_path / "moments.safetensors")
    args = ["--nm", "2:4"] if nm else ["--scope", "row", "--sparsity", "0.5"]
    run("prune-sparse", src, "-o", tmp_path / "d.safetensors", "--method", "wanda", "--stats", tmp_path / "moments.safetensors",
        "--dsnot", "--dsnot-threshold", "0.01", "--dsnot-cycles", str(cycles), *args, "--quiet")
    got = tensors(tmp_path / "d.safetensors")
    swaps = 0
    for k, v in w.items():
        if not is_target(k, v.shape):
            continue
        module = k[: -len(".weight")]
        sq = full[module + ".act_sq_sum"].astype(np.float64)
        wanda = (np.abs(v).astype(np.float64) * np.sqrt(sq / sq.max())).astype(np.float32)
        init = reference_masks(w, {k: wanda}, "row", 0.5, nm=nm)[k]
        mean, var = full[module + ".act_mean"].astype(np.float64), full[module + ".act_var"].astype(np.float64)
        for r in range(v.shape[0]):
            expect = dsnot_reference(v[r], init[r], mean, var, wanda[r], nm=nm, thr=0.01, cycles=cycles)
            assert np.array_equal(got[k][r] == 0, expect), (k, r)
            assert expect.sum() == init[r].sum()
            swaps += int((expect != init[r]).sum())
    assert swaps > 0  # DSnoT actually changed masks on this data


def test_report_threshold_and_counts(tmp_path):
    src = model(tmp_path, "F32")
    run("prune-sparse", src, "-o", tmp_path / "o.safetensors", "--sparsity", "0.3", "--quiet")
    rep = json.load(open(tmp_path / "o.report.json"))
    w = tensors(src)
    for row in rep["tensors"]:
        if not row["target"]:
            continue
        v = np.abs(w[row["name"]]).ravel()
        k = int(v.size * 0.3)
        assert row["pruned"] == k and row["threshold"] == pytest.approx(float(np.sort(v)[k - 1]))
    assert rep["summary"]["pruned"] == sum(int(w[k].size * 0.3) for k in w if is_target(k, w[k].shape))


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("rule", [["--sparsity", "0.41"], ["--nm", "2:4"], ["--nm", "3:8"]])
def test_16_bit_fast_path_equals_the_general_path(tmp_path, dtype, ties, rule):
    """Magnitude on whole 16-bit tensors runs on the storage bits; --mask-out takes the general
    path: the same bytes and the same report numbers."""
    src = model(tmp_path, dtype, ties=ties)
    for name, extra in (("fast", []), ("general", ["--mask-out", tmp_path / "m.safetensors"])):
        run("prune-sparse", src, "-o", tmp_path / f"{name}.safetensors", *rule, *extra, "--quiet")
    assert read_raw(tmp_path / "fast.safetensors") == read_raw(tmp_path / "general.safetensors")
    rows = [{r["name"]: r for r in json.load(open(tmp_path / f"{n}.report.json"))["tensors"]} for n in ("fast", "general")]
    for k, r in rows[0].items():
        if r["target"]:
            g = rows[1][k]
            assert r["pruned"] == g["pruned"] and r["achieved_sparsity"] == pytest.approx(g["achieved_sparsity"])
            assert r.get("threshold") == pytest.approx(g.get("threshold"))
            assert r["relative_norm_removed"] == pytest.approx(g["relative_norm_removed"], rel=1e-9)


def test_svd_options_belong_to_principal(tmp_path):
    src = model(tmp_path)
    code, _, err = run("prune-sparse", src, "-o", tmp_path / "o.safetensors", "--svd", "exact", check=False)
    assert code == 2 and "belong to --method principal" in err
    assert not (tmp_path / "o.safetensors").exists()
