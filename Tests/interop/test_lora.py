"""LoRA extraction, PEFT-rule merging and PiSSA against numpy implementations of PEFT's rules."""
import json, os, re
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from conftest import FIX, run

TL = f"{FIX}/tiny-llama"
P = "base_model.model."


def truncation(delta, k):
    u, s, vt = np.linalg.svd(delta.astype(np.float64), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vt[:k]


@pytest.mark.parametrize("split", ["sqrt", "left"])
def test_extract_gives_the_truncated_delta(tmp_path, split):
    out = tmp_path / "adapter"
    run("lowrank-svd", "extract", "--base", f"{TL}/base", f"{TL}/ft-a", "-o", out, "--rank", "4", "--svd", "exact",
        "--split", split, "--quiet")
    cfg = json.load(open(out / "adapter_config.json"))
    w = load_file(out / "adapter_model.safetensors")
    base, ft = load_file(f"{TL}/base/model.safetensors"), load_file(f"{TL}/ft-a/model.safetensors")
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 4 and cfg["rank_pattern"] == {}
    assert cfg["target_modules"] == sorted(cfg["target_modules"]) and "q_proj" in cfg["target_modules"]
    for k in base:
        if ".layers." in k and base[k].ndim == 2:
            m = k[: -len(".weight")]
            a, b = w[P + m + ".lora_A.weight"], w[P + m + ".lora_B.weight"]
            assert a.shape == (4, base[k].shape[1]) and b.shape == (base[k].shape[0], 4)
            expect = truncation(ft[k].astype(np.float64) - base[k], 4)
            assert np.allclose(b.astype(np.float64) @ a, expect, atol=1e-5)
            if split == "left":   # PEFT's converter: A = V_r^T has orthonormal rows
                assert np.allclose(a @ a.T, np.eye(4), atol=1e-5)
        elif base[k].ndim == 2 or "norm" in k:   # embeddings, lm_head, norms: saved whole
            assert np.array_equal(w[P + k], ft[k])


def test_energy_ranks_go_to_rank_and_alpha_patterns(tmp_path):
    out = tmp_path / "adapter"
    run("lowrank-svd", "extract", "--base", f"{TL}/base", f"{TL}/ft-a", "-o", out, "--energy", "0.8", "--quiet")
    cfg = json.load(open(out / "adapter_config.json"))
    w = load_file(out / "adapter_model.safetensors")
    base, ft = load_file(f"{TL}/base/model.safetensors"), load_file(f"{TL}/ft-a/model.safetensors")
    ranks = {}
    for k in base:
        if ".layers." in k and base[k].ndim == 2:
            s = np.linalg.svd(ft[k].astype(np.float64) - base[k], compute_uv=False)
            e = np.cumsum(s ** 2) / np.sum(s ** 2)
            ranks[k[: -len(".weight")]] = int(np.searchsorted(e, 0.8) + 1)
    assert cfg["r"] == cfg["lora_alpha"] == max(ranks.values())
    for m, r in ranks.items():
        assert w[P + m + ".lora_A.weight"].shape[0] == r
        if r != cfg["r"]:
            assert cfg["rank_pattern"][m] == r and cfg["alpha_pattern"][m] == r
        else:
            assert m not in cfg["rank_pattern"]


def test_extract_then_apply_is_base_plus_the_truncation(tmp_path):
    run("lowrank-svd", "extract", "--base", f"{TL}/base", f"{TL}/ft-a", "-o", tmp_path / "ad", "--rank", "3",
        "--embeddings", "lora", "--quiet")
    run("lowrank-svd", "apply", "--base", f"{TL}/base", tmp_path / "ad", "-o", tmp_path / "m.safetensors", "--quiet")
    base, ft, got = (load_file(p) for p in (f"{TL}/base/model.safetensors", f"{TL}/ft-a/model.safetensors", tmp_path / "m.safetensors"))
    for k in base:
        if base[k].ndim == 2:
            expect = base[k] + truncation(ft[k].astype(np.float64) - base[k], 3)
            assert np.allclose(got[k], expect, atol=2e-5), k
        else:
            assert np.array_equal(got[k], ft[k])   # norms via modules_to_save


def peft_merge(base, adapter_dir, scale=1.0):
    """numpy implementation of PEFT's merge_and_unload rules for LoRA."""
    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    w = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    out = {k: v.astype(np.float64) for k, v in base.items()}

    def pattern(d, m, default):
        for key, v in d.items():
            if re.match(rf"(.*\.)?({key})$", m):
                return v
        return default
    for key in w:
        for suffix, emb in ((".lora_A.weight", False), (".lora_embedding_A", True)):
            if key.endswith(suffix):
                m = key[len(P): -len(suffix)]
                a = w[key].astype(np.float64)
                b = w[key.replace("_A", "_B")].astype(np.float64)
                r, alpha = pattern(cfg.get("rank_pattern", {}), m, cfg["r"]), pattern(cfg.get("alpha_pattern", {}), m, cfg["lora_alpha"])
                s = alpha / (np.sqrt(r) if cfg.get("use_rslora") else r) * scale
                d = b @ a
                if emb or cfg.get("fan_in_fan_out"):
                    d = d.T
                out[m + ".weight"] = out[m + ".weight"] + s * d
                if not emb and cfg.get("lora_bias") and key.replace("lora_A.weight", "lora_B.bias") in w:
                    out[m + ".bias"] = out[m + ".bias"] + s * w[key.replace("lora_A.weight", "lora_B.bias")]
    for key in w:
        if ".lora_" not in key:
            out[key[len(P):]] = w[key].astype(np.float64)
    return out


def test_apply_follows_peft_rules(tmp_path):
    rng = np.random.default_rng(4)
    base = {"model.embed_tokens.weight": rng.standard_normal((20, 8)), "model.layers.0.mlp.up_proj.weight": rng.standard_normal((12, 8)),
            "model.layers.1.mlp.up_proj.weight": rng.standard_normal((12, 8)), "model.layers.0.mlp.up_proj.bias": rng.standard_normal(12),
            "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((8, 8)), "model.norm.weight": np.ones(8)}
    base = {k: v.astype(np.float32) for k, v in base.items()}
    save_file(base, tmp_path / "base.safetensors")
    ad = tmp_path / "ad"; os.makedirs(ad)
    lw = {P + "model.layers.0.mlp.up_proj.lora_A.weight": rng.standard_normal((2, 8)), P + "model.layers.0.mlp.up_proj.lora_B.weight": rng.standard_normal((12, 2)),
          P + "model.layers.0.mlp.up_proj.lora_B.bias": rng.standard_normal(12),
          P + "model.layers.1.mlp.up_proj.lora_A.weight": rng.standard_normal((4, 8)), P + "model.layers.1.mlp.up_proj.lora_B.weight": rng.standard_normal((12, 4)),
          P + "model.layers.0.self_attn.q_proj.lora_A.weight": rng.standard_normal((4, 8)), P + "model.layers.0.self_attn.q_proj.lora_B.weight": rng.standard_normal((8, 4)),
          P + "model.embed_tokens.lora_embedding_A": rng.standard_normal((4, 20)), P + "model.embed_tokens.lora_embedding_B": rng.standard_normal((8, 4)),
          P + "model.norm.weight": rng.standard_normal(8)}
    save_file({k: v.astype(np.float32) for k, v in lw.items()}, ad / "adapter_model.safetensors")
    cfg = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": True, "lora_bias": True,
           "rank_pattern": {"layers\\.0\\.mlp\\.up_proj": 2}, "alpha_pattern": {"up_proj": 3, "q_proj": 5},
           "target_modules": ["up_proj", "q_proj", "embed_tokens"], "modules_to_save": ["norm"]}
    json.dump(cfg, open(ad / "adapter_config.json", "w"))
    run("lowrank-svd", "apply", "--base", tmp_path / "base.safetensors", ad, "-o", tmp_path / "m.safetensors", "--scale", "0.7", "--quiet")
    got, expect = load_file(tmp_path / "m.safetensors"), peft_merge(base, ad, 0.7)
    for k in base:
        assert np.allclose(got[k], expect[k], rtol=1e-5, atol=1e-5), k


def test_apply_fan_in_fan_out(tmp_path):
    rng = np.random.default_rng(6)
    base = {"h.0.attn.c_attn.weight": rng.standard_normal((8, 24)).astype(np.float32)}   # GPT-2 Conv1D: [in, out]
    save_file(base, tmp_path / "b.safetensors")
    ad = tmp_path / "ad"; os.makedirs(ad)
    save_file({P + "h.0.attn.c_attn.lora_A.weight": rng.standard_normal((2, 8)).astype(np.float32),
               P + "h.0.attn.c_attn.lora_B.weight": rng.standard_normal((24, 2)).astype(np.float32)}, ad / "adapter_model.safetensors")
    json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "fan_in_fan_out": True, "target_modules": ["c_attn"]}, open(ad / "adapter_config.json", "w"))
    run("lowrank-svd", "apply", "--base", tmp_path / "b.safetensors", ad, "-o", tmp_path / "m.safetensors", "--quiet")
    assert np.allclose(load_file(tmp_path / "m.safetensors")["h.0.attn.c_attn.weight"], peft_merge(base, ad)["h.0.attn.c_attn.weight"], atol=1e-5)


@pytest.mark.parametrize("change,message", [({"use_dora": True}, "DoRA"), ({"peft_type": "IA3"}, "not supported")])
def test_apply_refuses_what_it_does_not_merge(tmp_path, change, message):
    run("lowrank-svd", "extract", "--base", f"{TL}/base", f"{TL}/ft-a", "-o", tmp_path / "ad", "--rank", "2", "--quiet")
    cfg = json.load(open(tmp_path / "ad" / "adapter_config.json")); cfg.update(change)
    json.dump(cfg, open(tmp_path / "ad" / "adapter_config.json", "w"))
    status, _, err = run("lowrank-svd", "apply", "--base", f"{TL}/base", tmp_path / "ad", "-o", tmp_path / "m", check=False)
    assert status == 1 and message in err and not (tmp_path / "m").exists()


def test_pissa_residual_plus_adapter_is_the_model(tmp_path):
    run("lowrank-svd", "pissa", f"{TL}/base", "-o", tmp_path / "p", "--rank", "4", "--quiet")
    res = load_file(tmp_path / "p" / "model.safetensors")
    ad = load_file(tmp_path / "p" / "pissa_adapter" / "adapter_model.safetensors")
    cfg = json.load(open(tmp_path / "p" / "pissa_adapter" / "adapter_config.json"))
    base = load_file(f"{TL}/base/model.safetensors")
    assert cfg["r"] == cfg["lora_alpha"] == 4 and cfg["init_lora_weights"] is True
    for k, v in base.items():
        if ".layers." in k and v.ndim == 2:
            m = k[: -len(".weight")]
            a, b = ad[P + m + ".lora_A.weight"], ad[P + m + ".lora_B.weight"]
            assert np.allclose(res[k] + b @ a, v, atol=1e-5)
            u, s, vt = np.linalg.svd(v.astype(np.float64), full_matrices=False)
            assert np.allclose(b.astype(np.float64) @ a, (u[:, :4] * s[:4]) @ vt[:4], atol=1e-5)   # the principal part
        else:
            assert np.array_equal(res[k], v)


def test_lowrank_errors_write_nothing(tmp_path):
    rng = np.random.default_rng(8)
    save_file({"model.embed_tokens.weight": rng.standard_normal((70, 32)).astype(np.float32)}, tmp_path / "resized.safetensors")
    cases = [
        (["extract", "--base", f"{TL}/base", f"{TL}/ft-a", "-o", tmp_path / "a.safetensors", "--rank", "2"], 2, "adapter is a folder"),
        (["extract", "--base", f"{TL}/base", tmp_path / "resized.safetensors", "-o", tmp_path / "ad", "--rank", "2"], 1, "differs from the base"),
        (["compress", f"{TL}/base", "-o", tmp_path / "c", "--energy", "0.9", "--factored"], 2, "--factored needs --rank"),
        (["compress", f"{TL}/base", "-o", tmp_path / "c", "--energy", "0.9", "--svd", "randomized"], 2, "needs --rank"),
        (["compress", f"{TL}/base", "-o", tmp_path / "c", "--rank", "2", "--energy", "0.9"], 2, "exactly one of"),
        (["pissa", f"{TL}/base", "-o", tmp_path / "p.safetensors", "--rank", "2"], 2, "writes a folder"),
        (["spectrum", f"{TL}/ft-a", "--intruders"], 2, "--base"),
        (["apply", "--base", f"{TL}/base", tmp_path / "nothing", "-o", tmp_path / "m"], 1, "adapter_config.json"),
    ]
    for args, status, message in cases:
        code, _, err = run("lowrank-svd", *args, check=False)
        assert code == status and message in err, (args, code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resized.safetensors"]


def large_pair(tmp_path, m=768, n=1024, seed=3):
    """A base and a fine-tune whose q_proj delta is large enough for the iterative and randomized
    methods (m*n*min(m, n) above 2^29) and has a decaying spectrum (power law plus noise)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, m)))
    delta = (u * (0.05 / np.arange(1, m + 1))) @ v.T + rng.standard_normal((m, n)) * 1e-5
    w = rng.standard_normal((m, n)) * 0.02
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight"]
    base = {k: (w + i).astype(np.float32) for i, k in enumerate(names)}
    ft = {k: (base[k] + delta * (i + 1)).astype(np.float32) for i, k in enumerate(names)}
    save_file(base, tmp_path / "base.safetensors")
    save_file(ft, tmp_path / "ft.safetensors")
    return base, ft


def test_exact_extraction_of_large_matrices_iterates_to_the_optimum(tmp_path):
    """Exact top-k of a large delta by converged subspace iteration: numpy's truncated SVD to f32
    precision, the iterations and measured residual reported, the same bytes for any --threads."""
    base, ft = large_pair(tmp_path)
    outs = []
    for threads in ("1", "2", "3"):
        out = tmp_path / f"a{threads}"
        run("lowrank-svd", "extract", "--base", tmp_path / "base.safetensors", tmp_path / "ft.safetensors", "-o", out,
            "--rank", "16", "--svd", "exact", "--threads", threads, "--quiet")
        outs.append(open(out / "adapter_model.safetensors", "rb").read())
    assert outs[0] == outs[1] == outs[2]
    rows = {r["name"]: r for r in json.load(open(tmp_path / "a1" / "wtool-report.json"))["tensors"]}
    w = load_file(tmp_path / "a1" / "adapter_model.safetensors")
    for k in base:
        delta = ft[k].astype(np.float64) - base[k]
        s = np.linalg.svd(delta, compute_uv=False)
        row = rows[k]
        assert row["svd"] == "exact" and 1 <= row["svd_iterations"] < 60 and row["svd_residual"] <= 1e-4
        assert row["relative_error"] == pytest.approx(np.sqrt((s[16:] ** 2).sum() / (s ** 2).sum()), rel=1e-5)
        m = k[: -len(".weight")]
        got = w[P + m + ".lora_B.weight"].astype(np.float64) @ w[P + m + ".lora_A.weight"]
        expect = truncation(delta, 16)
        assert np.abs(got - expect).max() <= 1e-4 * np.abs(expect).max()


def test_randomized_extraction_is_deterministic_whatever_the_threads(tmp_path):
    base, ft = large_pair(tmp_path, seed=4)
    outs = []
    for threads in ("1", "2"):
        out = tmp_path / f"a{threads}"
        run("lowrank-svd", "extract", "--base", tmp_path / "base.safetensors", tmp_path / "ft.safetensors", "-o", out,
            "--rank", "16", "--svd", "randomized", "--threads", threads, "--quiet")
        outs.append(open(out / "adapter_model.safetensors", "rb").read())
        rows = json.load(open(out / "wtool-report.json"))["tensors"]
        assert all(r["svd"] == "randomized" and "svd_iterations" not in r for r in rows)
    assert outs[0] == outs[1]


@pytest.mark.parametrize("action", ["extract", "compress"])
def test_non_finite_values_are_refused_by_name(tmp_path, action):
    """A NaN in the fine-tune: one line naming the file and the tensor, nothing written."""
    base, ft = large_pair(tmp_path, m=64, n=96)
    name = "model.layers.0.self_attn.q_proj.weight"
    ft[name][3, 5] = np.nan
    save_file(ft, tmp_path / "ft.safetensors")
    out = tmp_path / ("adapter" if action == "extract" else "o.safetensors")
    args = ["--base", tmp_path / "base.safetensors"] if action == "extract" else []
    status, _, err = run("lowrank-svd", action, *args, tmp_path / "ft.safetensors", "-o", out, "--rank", "4", "--quiet", check=False)
    assert status == 1 and len(err.strip().splitlines()) == 1
    assert "ft.safetensors" in err and name in err and "NaN or infinite" in err
    assert not out.exists()
