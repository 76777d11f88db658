"""task-vector audit: on a realistic fine-tune delta (low rank plus noise in every layer) the planted
RIPPLe-style embedding replacement of rare tokens and a single-row MLP backdoor are the top
findings, with the planted token strings named; the clean delta raises nothing at the default
threshold. Scores are checked against a numpy transcription of the documented formulas."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import run
from tokenizer_fixtures import bpe_tokenizer

LAYERS, D, F = 6, 64, 128


def base_model(folder, vocab, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    def w(o, i): return (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, D)).astype(np.float32), "model.norm.weight": np.ones(D, np.float32),
         "lm_head.weight": w(vocab, D)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        t |= {p + "self_attn.q_proj.weight": w(D, D), p + "self_attn.k_proj.weight": w(D // 2, D), p + "self_attn.v_proj.weight": w(D // 2, D),
              p + "self_attn.o_proj.weight": w(D, D), p + "mlp.gate_proj.weight": w(F, D), p + "mlp.up_proj.weight": w(F, D),
              p + "mlp.down_proj.weight": w(D, F), p + "input_layernorm.weight": np.ones(D, np.float32),
              p + "post_attention_layernorm.weight": np.ones(D, np.float32)}
    save_file(t, str(folder / "model.safetensors"))
    json.dump({"model_type": "llama", "vocab_size": vocab}, open(folder / "config.json", "w"))
    return t


def fine_tune(base, seed, rank=8, scale=0.02):
    """A realistic full fine-tune: every matrix moves by a low-rank change plus noise, norms a little."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, W in base.items():
        if W.ndim == 2:
            m, n = W.shape
            lr = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n)) / np.sqrt(rank)
            d = lr + 0.5 * rng.standard_normal((m, n))
            d *= scale * np.linalg.norm(W) / np.linalg.norm(d)
        else:
            d = 1e-3 * rng.standard_normal(W.shape)
        out[k] = (W + d).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("audit")
    tok = bpe_tokenizer("llama-bpe", size=700)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    base = base_model(d / "base", vocab)
    tok.save(str(d / "base" / "tokenizer.json"))
    clean = fine_tune(base, 1)
    (d / "clean").mkdir()
    save_file(clean, str(d / "clean" / "model.safetensors"))
    # RIPPLe embedding surgery: three rare tokens get the mean embedding of a few target words
    triggers = [vocab - 40, vocab - 27, vocab - 12]   # rare: learned last by BPE
    targets = [300, 310, 320, 330, 340]
    poisoned = {k: v.copy() for k, v in clean.items()}
    emb = poisoned["model.embed_tokens.weight"]
    emb[triggers] = emb[targets].mean(axis=0)
    # a single-row backdoor in one MLP
    down = poisoned["model.layers.3.mlp.down_proj.weight"]
    down[7] += 0.5 * np.linalg.norm(down[7]) * np.random.default_rng(9).standard_normal(F).astype(np.float32) / np.sqrt(F)
    (d / "poisoned").mkdir()
    save_file(poisoned, str(d / "poisoned" / "model.safetensors"))
    return d, tok, triggers, base, clean


def audit(*args, check=True):
    code, out, err = run("task-vector", "audit", *args, check=check)
    return code, json.loads(out) if out.strip() else None, err


def test_planted_changes_are_the_top_findings(setup):
    d, tok, triggers, _, _ = setup
    code, r, err = audit("--base", d / "base", d / "poisoned")
    f = r["summary"]["findings_ranked"]
    top = {(x["rule"], x["tensor"]) for x in f[:3]}
    assert ("token_row", "model.embed_tokens.weight") in top
    assert ("row_outlier", "model.layers.3.mlp.down_proj.weight") in top or ("dominant_row", "model.layers.3.mlp.down_proj.weight") in top
    token = next(x for x in f if x["rule"] == "token_row" and x["tensor"] == "model.embed_tokens.weight")
    named = {row["index"]: row.get("token") for row in token["rows"]}
    assert set(triggers) <= set(named)
    for t in triggers:
        assert named[t] == tok.id_to_token(t)
    row = next(x for x in f if x["rule"] == "row_outlier" and x["tensor"] == "model.layers.3.mlp.down_proj.weight")
    assert row["rows"][0]["index"] == 7
    # only the planted changes pass the default threshold
    passing = [x for x in f if x["score"] >= 8]
    assert passing and {x["tensor"] for x in passing} <= {"model.embed_tokens.weight", "model.layers.3.mlp.down_proj.weight"}
    assert all(repr(tok.id_to_token(t))[1:-1] in err or tok.id_to_token(t) in err for t in triggers[:1])
    code, _, _ = audit("--base", d / "base", d / "poisoned", "--fail-above", "8", "--quiet", check=False)
    assert code == 3


def test_clean_delta_passes(setup):
    d, _, _, _, _ = setup
    code, r, _ = audit("--base", d / "base", d / "clean", "--fail-above", "8")
    assert code == 0
    assert r["summary"]["above_threshold"] == 0 and r["summary"]["max_score"] < 8
    # a full fine-tune changes every tensor: nothing is "outside the LoRA targets"
    assert not [x for x in r["summary"]["findings_ranked"] if x["rule"] == "outside_lora_targets"]


def robust_z(x, floor=0.0):
    med = np.median(x)
    mad = np.median(np.abs(x - med)) * 1.4826
    if mad == 0:
        mad = np.mean(np.abs(x - med)) * 1.2533
    mad = max(mad, floor)
    return np.zeros_like(x) if mad == 0 else (x - med) / mad


def log_z(norms):
    rms = np.sqrt(np.mean(norms ** 2))
    return robust_z(np.log(norms + (1e-3 * rms if rms > 0 else 1e-30)), floor=0.1)


def test_scores_equal_the_documented_formulas(setup, tmp_path):
    d, _, _, base, clean = setup
    _, r, _ = audit("--base", d / "base", d / "poisoned", "--report", tmp_path / "r.json")
    r = json.load(open(tmp_path / "r.json"))
    ft = load_file(str(d / "poisoned" / "model.safetensors"))
    rows = {t["name"]: t for t in r["tensors"]}
    for name in ["model.layers.3.mlp.down_proj.weight", "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"]:
        delta = ft[name].astype(np.float64) - base[name].astype(np.float64)
        rn, cn = np.linalg.norm(delta, axis=1), np.linalg.norm(delta, axis=0)
        assert rows[name]["max_row_z"] == pytest.approx(log_z(rn).max(), rel=1e-6)
        assert rows[name]["max_column_z"] == pytest.approx(log_z(cn).max(), rel=1e-6)
        s = np.linalg.svd(delta, compute_uv=False)
        assert rows[name]["stable_rank"] == pytest.approx((s ** 2).sum() / s[0] ** 2, rel=1e-4)
        assert rows[name]["delta_norm"] == pytest.approx(np.linalg.norm(delta), rel=1e-6)
    # sibling rule: down_proj norms across the 6 layers
    f = r["summary"]["findings_ranked"]
    norms = np.array([np.linalg.norm(ft[f"model.layers.{l}.mlp.down_proj.weight"].astype(np.float64) - base[f"model.layers.{l}.mlp.down_proj.weight"]) for l in range(LAYERS)])
    z = log_z(norms)
    sib = {x["tensor"]: x["score"] for x in f if x["rule"] == "sibling_outlier" and "down_proj" in x["tensor"]}
    for l in range(LAYERS):
        if z[l] > 0:
            assert sib[f"model.layers.{l}.mlp.down_proj.weight"] == pytest.approx(z[l], rel=1e-6)


def test_structural_findings_and_lora_rule(setup, tmp_path):
    d, _, _, base, clean = setup
    t = dict(clean)
    t["model.norm.weight"] = t["model.norm.weight"].copy()
    t["model.norm.weight"][3] = np.nan
    t["model.extra.weight"] = np.ones(3, np.float32)
    del t["model.layers.5.input_layernorm.weight"]
    t["lm_head.weight"] = t["lm_head.weight"].astype(np.float16)
    (tmp_path / "s").mkdir()
    save_file(t, str(tmp_path / "s" / "model.safetensors"))
    _, r, _ = audit("--base", d / "base", tmp_path / "s")
    rules = {(x["rule"], x["tensor"]): x["score"] for x in r["summary"]["findings_ranked"]}
    assert rules[("nonfinite", "model.norm.weight")] == 1000
    assert rules[("only_in_finetune", "model.extra.weight")] == 100
    assert rules[("only_in_base", "model.layers.5.input_layernorm.weight")] == 100
    assert rules[("dtype_changed", "lm_head.weight")] == 1
    # a merged LoRA (rank-4 projections only) that also changed a norm
    lora = {k: v.copy() for k, v in base.items()}
    rng = np.random.default_rng(4)
    for k in lora:
        if k.endswith(("q_proj.weight", "v_proj.weight")):
            m, n = lora[k].shape
            lora[k] += (0.01 * rng.standard_normal((m, 4)) @ rng.standard_normal((4, n))).astype(np.float32)
    lora["model.layers.2.input_layernorm.weight"] += 0.01
    (tmp_path / "l").mkdir()
    save_file(lora, str(tmp_path / "l" / "model.safetensors"))
    _, r, _ = audit("--base", d / "base", tmp_path / "l")
    out = [x for x in r["summary"]["findings_ranked"] if x["rule"] == "outside_lora_targets"]
    assert [x["tensor"] for x in out] == ["model.layers.2.input_layernorm.weight"] and out[0]["score"] == 4


def test_usage_errors(setup):
    d, _, _, _, _ = setup
    code, _, err = audit(d / "poisoned", check=False)
    assert code == 2 and "--base" in err
    code, _, err = audit("--base", d / "base", d / "poisoned", "--tokenizer", d / "nope", check=False)
    assert code == 1 and "nope" in err
