"""Width and depth shrinking (prune-sparse --method structured --target layers|hidden, and
--select for every structured target): the layer-removed model computes exactly what the original
computes with those blocks skipped (numpy forward); the hidden-shrunk model equals a numpy
transcription of the same channel selection, tensor for tensor, byte for byte."""
import json, os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import run
from rebasin_reference import LLAMA, llama_params, save_llama, llama_logits

TOKENS = [3, 17, 5, 42, 8, 0, 49, 21]


def model(tmp_path, layers=4, tied=False, seed=0, name="m"):
    cfg = dict(LLAMA, layers=layers)
    p = llama_params(seed, cfg, tied=tied)
    save_llama(str(tmp_path / name), p, cfg, tied=tied)
    return p, cfg


def skipped(p, removed, layers):
    """The original's parameters with the removed blocks left out and the rest renumbered."""
    kept = [l for l in range(layers) if l not in removed]
    out = {k: v for k, v in p.items() if not k.startswith("model.layers.")}
    for new, old in enumerate(kept):
        for k, v in p.items():
            if k.startswith(f"model.layers.{old}."):
                out[f"model.layers.{new}." + k[len(f"model.layers.{old}."):]] = v
    return out


@pytest.mark.parametrize("layers,spec,removed", [(4, "1", [1]), (4, "0,2-3", [0, 2, 3]), (12, "2,10", [2, 10])])
def test_removed_layers_compute_the_original_with_blocks_skipped(tmp_path, layers, spec, removed):
    p, cfg = model(tmp_path, layers)
    run("prune-sparse", tmp_path / "m", "-o", tmp_path / "s", "--method", "structured", "--target", "layers", "--layers", spec, "--quiet")
    got = load_file(str(tmp_path / "s" / "model.safetensors"))
    want = skipped(p, removed, layers)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].tobytes() == want[k].tobytes(), k
    c = json.load(open(tmp_path / "s" / "config.json"))
    assert c["num_hidden_layers"] == layers - len(removed)
    small = dict(cfg, layers=layers - len(removed))
    np.testing.assert_array_equal(llama_logits(got, TOKENS, small), llama_logits(want, TOKENS, small))
    rep = json.load(open(tmp_path / "s" / "wtool-report.json"))
    assert rep["summary"]["removed"] == removed


def block_scores(p, layers, stats=None):
    out = []
    for l in range(layers):
        s = 0.0
        for m in ("self_attn.o_proj", "mlp.down_proj"):
            w = p[f"model.layers.{l}.{m}.weight"].astype(np.float64)
            a = stats[f"model.layers.{l}.{m}.act_sq_sum"].astype(np.float64) if stats else 1.0
            s += np.sqrt(((w * w).sum(axis=0) * a).sum())
        out.append(s)
    return np.array(out)


def test_layers_chosen_by_scores(tmp_path):
    p, cfg = model(tmp_path, 6)
    # weight norms: blocks 2 and 4 write less into the residual stream
    for l in (2, 4):
        for m in ("self_attn.o_proj", "mlp.down_proj"):
            p[f"model.layers.{l}.{m}.weight"] *= 0.1
    save_llama(str(tmp_path / "m"), p, cfg)
    run("prune-sparse", tmp_path / "m", "-o", tmp_path / "n", "--method", "structured", "--target", "layers", "--sparsity", "0.34", "--quiet")
    rep = json.load(open(tmp_path / "n" / "wtool-report.json"))
    sc = block_scores(p, 6)
    assert rep["summary"]["removed"] == sorted(np.argsort(sc, kind="stable")[:2].tolist()) == [2, 4]
    assert [r["score"] for r in rep["tensors"]] == pytest.approx(sc.tolist(), rel=1e-9)
    # activation statistics change the ranking: blocks 0 and 5 see almost no input
    rng = np.random.default_rng(1)
    stats = {}
    for l in range(6):
        for m, n in (("self_attn.o_proj", 32), ("mlp.down_proj", 48)):
            stats[f"model.layers.{l}.{m}.act_sq_sum"] = (rng.uniform(1, 2, n) * (1e-4 if l in (0, 5) else 1)).astype(np.float32)
    save_file(stats, str(tmp_path / "acts.safetensors"))
    run("prune-sparse", tmp_path / "m", "-o", tmp_path / "a", "--method", "structured", "--target", "layers", "--sparsity", "0.34",
        "--stats", tmp_path / "acts.safetensors", "--quiet")
    rep = json.load(open(tmp_path / "a" / "wtool-report.json"))
    sc = block_scores(p, 6, stats)
    assert rep["summary"]["removed"] == sorted(np.argsort(sc, kind="stable")[:2].tolist()) == [0, 5]


HIDDEN_COLS = ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight")
HIDDEN_ROWS = ("self_attn.o_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight")


def hidden_axis(name):
    leaf = name.split(".", 3)[-1] if name.startswith("model.layers.") else name
    if leaf in HIDDEN_COLS or name in ("model.embed_tokens.weight", "lm_head.weight"):
        return 1
    if leaf in HIDDEN_ROWS or name == "model.norm.weight":
        return 0
    return None


def numpy_hidden(p, keep_n, rule, stats=None, layers=4):
    d = p["model.embed_tokens.weight"].shape[1]
    if rule == "uniform":
        keep = [i * d // keep_n for i in range(keep_n)]
    else:
        acc = np.zeros(d)
        if rule == "stats":
            for l in range(layers):
                for m in ("self_attn.q_proj", "mlp.gate_proj"):
                    acc += stats[f"model.layers.{l}.{m}.act_sq_sum"].astype(np.float64)
        else:
            for k, v in p.items():
                ax = hidden_axis(k)
                if ax is not None:
                    w = v.astype(np.float64) ** 2
                    acc += w if w.ndim == 1 else w.sum(axis=1 - ax)
        acc = acc.astype(np.float32)
        order = sorted(range(d), key=lambda c: (acc[c], c))      # the smallest go, ties lower index first
        keep = sorted(order[d - keep_n:])
    out = {}
    for k, v in p.items():
        ax = hidden_axis(k)
        out[k] = v if ax is None else np.take(v, keep, axis=ax)
    return out, keep


@pytest.mark.parametrize("rule", ["norm", "uniform", "stats"])
@pytest.mark.parametrize("tied", [False, True])
def test_hidden_channels_equal_numpy_selection(tmp_path, rule, tied):
    p, cfg = model(tmp_path, 4, tied=tied)
    args = ["--select", rule]
    stats = None
    if rule == "stats":
        rng = np.random.default_rng(2)
        stats = {f"model.layers.{l}.{m}.act_sq_sum": rng.uniform(0.1, 3, 32).astype(np.float32)
                 for l in range(4) for m in ("self_attn.q_proj", "mlp.gate_proj")}
        save_file(stats, str(tmp_path / "acts.safetensors"))
        args += ["--stats", tmp_path / "acts.safetensors"]
    run("prune-sparse", tmp_path / "m", "-o", tmp_path / "h", "--method", "structured", "--target", "hidden", "--sparsity", "0.25", *args, "--quiet")
    got = load_file(str(tmp_path / "h" / "model.safetensors"))
    want, keep = numpy_hidden(p, 24, rule, stats)
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].tobytes() == np.ascontiguousarray(want[k]).tobytes(), k
    c = json.load(open(tmp_path / "h" / "config.json"))
    assert c["hidden_size"] == 24 and c["head_dim"] == 8 and c["num_attention_heads"] == 4
    assert json.load(open(tmp_path / "h" / "wtool-report.json"))["summary"]["kept_channels"] == keep
    # the shrunk model runs (attention keeps head_dim 8 and its RoPE)
    logits = llama_logits(got, TOKENS, dict(cfg, d=24))
    assert logits.shape == (len(TOKENS), cfg["vocab"]) and np.isfinite(logits).all()


@pytest.mark.parametrize("target,units", [("mlp", 48), ("heads", 2)])
def test_uniform_selection_for_mlp_and_heads(tmp_path, target, units):
    model(tmp_path, 2)
    run("prune-sparse", tmp_path / "m", "-o", tmp_path / "u", "--method", "structured", "--target", target, "--sparsity", "0.5",
        "--select", "uniform", "--quiet")
    rep = json.load(open(tmp_path / "u" / "wtool-report.json"))
    keep = [i * units // (units // 2) for i in range(units // 2)]
    for row in rep["tensors"]:
        assert row["removed"] == [u for u in range(units) if u not in keep]


@pytest.mark.parametrize("args,needle", [
    (["--target", "layers", "--layers", "9"], "names layer 9"),
    (["--target", "layers", "--layers", "0-3"], "removes all 4 layers"),
    (["--target", "layers", "--layers", "1", "--sparsity", "0.5"], "do not give --sparsity"),
    (["--target", "mlp", "--layers", "1"], "--layers belongs to --target layers"),
    (["--target", "hidden", "--select", "stats"], "--select stats needs --stats"),
    (["--target", "layers", "--sparsity", "0.1"], "removes no layer"),
    (["--target", "hidden", "--select", "often"], "--select must be"),
])
def test_misuse_is_refused_before_work(tmp_path, args, needle):
    model(tmp_path, 4)
    code, _, err = run("prune-sparse", tmp_path / "m", "-o", tmp_path / "o", "--method", "structured", *args, check=False)
    assert code == 2 and needle in err, err
    assert not (tmp_path / "o").exists()


def test_hidden_refuses_an_unknown_tensor_of_hidden_width(tmp_path):
    p, cfg = model(tmp_path, 2)
    p["model.layers.0.extra_scale"] = np.ones(32, np.float32)
    save_llama(str(tmp_path / "m"), p, cfg)
    code, _, err = run("prune-sparse", tmp_path / "m", "-o", tmp_path / "o", "--method", "structured", "--target", "hidden", check=False)
    assert code == 1 and "model.layers.0.extra_scale" in err and "refused" in err
    assert not (tmp_path / "o").exists()
