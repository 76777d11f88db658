"""task-vector apply --coefficients (aTLAS: a coefficient per task vector and parameter block)
against a numpy implementation of θ_b = θ₀,b + Σ_t λ_{t,b} τ_{t,b}; aTLAS's own .pt layout (a
[tasks, blocks] tensor, written here without torch) with a block-order list round-trips."""
import json, os

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import run, FIX
from torch_zip import Pickle, Tensor, save
from st_raw import read_raw


def load_any(path):
    """name -> values (bf16 widened to f32 exactly, as wtool decodes it)."""
    out = {}
    for k, (dt, shape, data) in read_raw(path).items():
        if dt == "BF16":
            out[k] = (np.frombuffer(data, np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
        else:
            out[k] = np.frombuffer(data, {"F32": np.float32, "F16": np.float16}[dt]).reshape(shape)
    return out

BASE = os.path.join(FIX, "tiny-llama", "base")
FTS = [os.path.join(FIX, "tiny-llama", "ft-a"), os.path.join(FIX, "tiny-llama", "ft-bf16")]


def numpy_atlas(coef_of):
    """coef_of(t, name) -> λ; in f64 per entry, rounded once to the base dtype (f32 here)."""
    base = load_file(os.path.join(BASE, "model.safetensors"))
    fts = [load_any(os.path.join(f, "model.safetensors")) for f in FTS]
    out = {}
    for k, b in base.items():
        acc = b.astype(np.float64)
        b64 = b.astype(np.float64)
        for t, ft in enumerate(fts):
            acc = acc + coef_of(t, k) * (ft[k].astype(np.float64) - b64)
        out[k] = acc.astype(b.dtype)
    return out


def apply(tmp_path, *extra):
    out = tmp_path / "out"
    run("task-vector", "apply", "--base", BASE, *FTS, "--inputs", "model", *extra, "-o", out, "--quiet")
    return load_file(str(out / "model.safetensors")), json.load(open(out / "wtool-report.json"))


def test_json_globs_equal_numpy(tmp_path):
    blocks = ["model.layers.*.self_attn.*", "model.layers.*.mlp.*", "model.embed_tokens.weight", "*norm*", "lm_head.weight"]
    coef = [[0.5, 1.2, -0.3, 0.0, 2.0], [0.25, -0.7, 1.0, 0.9, 0.1]]
    path = tmp_path / "c.json"
    json.dump({"tasks": ["a", "bf16"], "blocks": blocks, "coefficients": coef}, open(path, "w"))
    got, report = apply(tmp_path, "--coefficients", path)
    import fnmatch
    def block(name):
        hits = [i for i, b in enumerate(blocks) if fnmatch.fnmatchcase(name, b)]
        assert len(hits) == 1
        return hits[0]
    want = numpy_atlas(lambda t, k: coef[t][block(k)])
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].tobytes() == want[k].tobytes(), k
    rows = {r["name"]: r for r in report["tensors"]}
    assert rows["model.layers.0.mlp.up_proj.weight"]["coefficients"] == [1.2, -0.7]
    assert rows["model.layers.0.mlp.up_proj.weight"]["block"] == "model.layers.*.mlp.*"


def test_one_coefficient_per_task_is_plain_scaling(tmp_path):
    path = tmp_path / "c.json"
    json.dump({"coefficients": [0.3, -1.5]}, open(path, "w"))
    got, _ = apply(tmp_path, "--coefficients", path)
    want = numpy_atlas(lambda t, k: [0.3, -1.5][t])
    for k in want:
        assert got[k].tobytes() == want[k].tobytes(), k


def atlas_pt(path, coef):
    """aTLAS's learned_additions.pt: torch.save of one float32 tensor [T, P]."""
    coef = np.ascontiguousarray(coef, np.float32)
    p = Pickle()
    p.tensor(Tensor("0", "FloatStorage", coef.tobytes(), coef.size, 0, coef.shape, (coef.shape[1], 1) if coef.ndim == 2 else (1,)))
    save(str(path), {"_": Tensor("0", "FloatStorage", coef.tobytes(), coef.size, 0, coef.shape, (1,))}, pickle_bytes=p.finish())


def test_atlas_layout_round_trips(tmp_path):
    base = load_file(os.path.join(BASE, "model.safetensors"))
    # the parameter order of the PyTorch module (embeddings first), not safetensors' sorted order
    names = ["model.embed_tokens.weight"] + sorted(k for k in base if k.startswith("model.layers.")) + ["model.norm.weight", "lm_head.weight"]
    names = [n for n in names if n in base]
    rng = np.random.default_rng(0)
    coef = rng.uniform(-1, 1.5, size=(2, len(names))).astype(np.float32)
    atlas_pt(tmp_path / "learned_additions.pt", coef)
    (tmp_path / "order.txt").write_text("# parameters of the model, in order\n" + "\n".join(names) + "\n")
    got, report = apply(tmp_path, "--coefficients", tmp_path / "learned_additions.pt", "--block-order", tmp_path / "order.txt")
    want = numpy_atlas(lambda t, k: float(coef[t][names.index(k)]))
    for k in want:
        assert got[k].tobytes() == want[k].tobytes(), k
    # the same coefficients as wtool's JSON (names as blocks) give the same bytes
    json.dump({"blocks": names, "coefficients": coef.astype(np.float64).tolist()}, open(tmp_path / "c.json", "w"))
    (tmp_path / "out").rename(tmp_path / "first")
    again, _ = apply(tmp_path, "--coefficients", tmp_path / "c.json")
    assert all(again[k].tobytes() == got[k].tobytes() for k in got)


def test_validation_before_work(tmp_path):
    base = load_file(os.path.join(BASE, "model.safetensors"))
    cases = []
    def js(name, obj):
        p = tmp_path / name
        json.dump(obj, open(p, "w"))
        return p
    cases.append((js("miss.json", {"blocks": ["model.layers.*"], "coefficients": [[1], [1]]}), [], "is in no block", 1))
    cases.append((js("twice.json", {"blocks": ["*", "model.*"], "coefficients": [[1, 1], [1, 1]]}), [], "is in 2 blocks", 1))
    cases.append((js("ghost.json", {"blocks": ["*", "nothing.here"], "coefficients": [[1, 1], [1, 1]]}), [], "matches no tensor", 1))
    cases.append((js("rows.json", {"blocks": ["*"], "coefficients": [[1]]}), [], "for 1 task vector(s); 2 are given", 1))
    cases.append((js("nan.json", {"blocks": ["*"], "coefficients": [[1], ["x"]]}), [], "holds", 1))
    atlas_pt(tmp_path / "c.pt", np.ones((2, 3), np.float32))
    (tmp_path / "o.txt").write_text("a\nb\n")
    cases.append((tmp_path / "c.pt", [], "--block-order", 2))
    cases.append((tmp_path / "c.pt", ["--block-order", tmp_path / "o.txt"], "names 2 blocks", 1))
    cases.append((js("ok.json", {"coefficients": [1, 1]}), ["--scale", "1,1"], "do not give --scale", 2))
    cases.append((js("ok2.json", {"coefficients": [1, 1]}), ["--method", "ties", "--density", "0.5"], "--method sum", 2))
    for path, extra, needle, status in cases:
        out = tmp_path / ("o-" + path.name)
        code, _, err = run("task-vector", "apply", "--base", BASE, *FTS, "--inputs", "model", "--coefficients", path, *extra, "-o", out, check=False)
        assert code == status and needle in err, (path.name, err)
        assert len(err.strip().splitlines()) == 1 and not out.exists()
