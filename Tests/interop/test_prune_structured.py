"""Structured pruning: the smaller tiny LLaMA computes exactly what the original computes with the
removed channels zeroed (numpy forward passes of the MLP and of GQA attention, in f64)."""
import json, os
import numpy as np
import pytest
from safetensors.numpy import load_file
from conftest import FIX, run

TL = f"{FIX}/tiny-llama"


def load(folder):
    t = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            t.update(load_file(os.path.join(folder, f)))
    return {k: v.astype(np.float64) for k, v in t.items()}, json.load(open(os.path.join(folder, "config.json")))


def mlp(w, p, x):
    g, u, d = w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"], w[p + "mlp.down_proj.weight"]
    a = x @ g.T
    return (a / (1 + np.exp(-a)) * (x @ u.T)) @ d.T


def attention(w, p, x, cfg):
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", cfg["hidden_size"] // H)
    T = x.shape[0]
    q = (x @ w[p + "self_attn.q_proj.weight"].T).reshape(T, H, hd)
    k = np.repeat((x @ w[p + "self_attn.k_proj.weight"].T).reshape(T, KV, hd), H // KV, axis=1)
    v = np.repeat((x @ w[p + "self_attn.v_proj.weight"].T).reshape(T, KV, hd), H // KV, axis=1)
    s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
    s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
    return np.einsum("hts,shd->thd", s, v).reshape(T, H * hd) @ w[p + "self_attn.o_proj.weight"].T


def test_mlp_channels(tmp_path):
    out = tmp_path / "small"
    run("prune-sparse", f"{TL}/ft-a", "-o", out, "--method", "structured", "--target", "mlp", "--sparsity", "0.25", "--quiet")
    w, cfg = load(f"{TL}/ft-a")
    small, scfg = load(out)
    rep = json.load(open(out / "wtool-report.json"))
    assert scfg["intermediate_size"] == 48
    x = np.random.default_rng(0).standard_normal((5, cfg["hidden_size"]))
    for row in rep["tensors"]:
        p = row["layer"] + "."
        removed = row["removed"]
        g, u, d = (w[p + f"mlp.{n}_proj.weight"] for n in ("gate", "up", "down"))
        score = np.linalg.norm(g, axis=1) * np.linalg.norm(u, axis=1) * np.linalg.norm(d, axis=0)
        assert sorted(removed) == sorted(np.argsort(score.astype(np.float32), kind="stable")[:16].tolist())
        zeroed = dict(w)
        zeroed[p + "mlp.gate_proj.weight"] = g.copy(); zeroed[p + "mlp.gate_proj.weight"][removed] = 0
        zeroed[p + "mlp.up_proj.weight"] = u.copy(); zeroed[p + "mlp.up_proj.weight"][removed] = 0
        zeroed[p + "mlp.down_proj.weight"] = d.copy(); zeroed[p + "mlp.down_proj.weight"][:, removed] = 0
        assert np.allclose(mlp(small, p, x), mlp(zeroed, p, x), rtol=1e-12, atol=1e-12)
    for k in w:  # everything else untouched
        if "mlp" not in k:
            assert np.array_equal(w[k], small[k])


def test_attention_kv_groups(tmp_path):
    out = tmp_path / "small"
    run("prune-sparse", f"{TL}/ft-a", "-o", out, "--method", "structured", "--target", "heads", "--sparsity", "0.5", "--quiet")
    w, cfg = load(f"{TL}/ft-a")
    small, scfg = load(out)
    assert (scfg["num_attention_heads"], scfg["num_key_value_heads"], scfg["head_dim"]) == (2, 1, 8)
    rep = json.load(open(out / "wtool-report.json"))
    H, KV, hd = 4, 2, 8
    x = np.random.default_rng(1).standard_normal((6, cfg["hidden_size"]))
    for row in rep["tensors"]:
        p = row["layer"] + "."
        (g,) = row["removed"]
        zeroed = dict(w)
        qrows = slice(g * (H // KV) * hd, (g + 1) * (H // KV) * hd)
        for name, sl, axis in (("q", qrows, 0), ("k", slice(g * hd, (g + 1) * hd), 0), ("v", slice(g * hd, (g + 1) * hd), 0), ("o", qrows, 1)):
            m = w[p + f"self_attn.{name}_proj.weight"].copy()
            if axis == 0: m[sl] = 0
            else: m[:, sl] = 0
            zeroed[p + f"self_attn.{name}_proj.weight"] = m
        assert np.allclose(attention(small, p, x, scfg), attention(zeroed, p, x, cfg), rtol=1e-12, atol=1e-12)


def test_structured_needs_a_folder_with_config(tmp_path):
    status, _, err = run("prune-sparse", f"{TL}/base/model.safetensors", "-o", tmp_path / "o", "--method", "structured", check=False)
    assert status == 1 and "config.json" in err
    assert not (tmp_path / "o").exists()
