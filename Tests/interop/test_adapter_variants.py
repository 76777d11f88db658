"""lowrank-svd apply for PEFT's DoRA, MiSS/Bone and FourierFT adapters against numpy transcriptions
of merge_and_unload's rules (FourierFT's locations from numpy's MT19937 with the legacy 32-bit
seeding, which yields torch's CPU stream); PEFT itself is compared in Tests/clients/test_peft.py."""
import json, os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import run

P = "base_model.model."


def adapter(tmp_path, cfg, tensors, base):
    save_file({k: v.astype(np.float32) for k, v in base.items()}, str(tmp_path / "base.safetensors"))
    ad = tmp_path / "ad"
    ad.mkdir()
    save_file({P + k: v.astype(np.float32) for k, v in tensors.items()}, str(ad / "adapter_model.safetensors"))
    json.dump(cfg, open(ad / "adapter_config.json", "w"))
    out = tmp_path / "m.safetensors"
    run("lowrank-svd", "apply", "--base", tmp_path / "base.safetensors", ad, "-o", out, "--quiet")
    return load_file(str(out)), json.load(open(str(out).replace(".safetensors", ".report.json")))


def test_dora_linear_conv1d_and_embedding(tmp_path):
    rng = np.random.default_rng(1)
    W = {"l.q_proj.weight": rng.standard_normal((12, 8)), "l.c_attn.weight": rng.standard_normal((8, 12)),
         "embed.weight": rng.standard_normal((20, 6)), "other.weight": rng.standard_normal((4, 4))}
    W = {k: v.astype(np.float32) for k, v in W.items()}
    T = {"l.q_proj.lora_A.weight": rng.standard_normal((2, 8)), "l.q_proj.lora_B.weight": rng.standard_normal((12, 2)),
         "l.q_proj.lora_magnitude_vector": rng.uniform(0.5, 2, 12),
         "embed.lora_embedding_A": rng.standard_normal((2, 20)), "embed.lora_embedding_B": rng.standard_normal((6, 2)),
         "embed.lora_magnitude_vector": rng.uniform(0.5, 2, 6), "embed.base_layer.weight": 2 * W["embed.weight"]}
    cfg = {"peft_type": "LORA", "use_dora": True, "r": 2, "lora_alpha": 5, "target_modules": ["q_proj", "embed"]}
    got, rep = adapter(tmp_path, cfg, T, W)
    s = 5 / 2
    V = W["l.q_proj.weight"].astype(np.float64) + s * (T["l.q_proj.lora_B.weight"] @ T["l.q_proj.lora_A.weight"])
    want = T["l.q_proj.lora_magnitude_vector"][:, None] / np.linalg.norm(V, axis=1, keepdims=True) * V
    np.testing.assert_allclose(got["l.q_proj.weight"], want, rtol=2e-6, atol=2e-6)
    # embedding: W0 is the adapter's base_layer copy; norm over the vocab axis (per column)
    V = T["embed.base_layer.weight"] + s * (T["embed.lora_embedding_B"] @ T["embed.lora_embedding_A"]).T
    want = T["embed.lora_magnitude_vector"][None, :] / np.linalg.norm(V, axis=0, keepdims=True) * V
    np.testing.assert_allclose(got["embed.weight"], want, rtol=2e-6, atol=2e-6)
    assert got["other.weight"].tobytes() == W["other.weight"].tobytes()
    kinds = {r["name"]: r.get("kind") for r in rep["tensors"]}
    assert kinds["l.q_proj.weight"] == "dora, linear" and kinds["embed.weight"] == "dora, embedding"


def test_dora_fan_in_fan_out(tmp_path):
    rng = np.random.default_rng(2)
    W = {"h.c_attn.weight": rng.standard_normal((8, 12)).astype(np.float32)}   # Conv1D [in, out]
    T = {"h.c_attn.lora_A.weight": rng.standard_normal((3, 8)), "h.c_attn.lora_B.weight": rng.standard_normal((12, 3)),
         "h.c_attn.lora_magnitude_vector": rng.uniform(0.5, 2, 12)}
    cfg = {"peft_type": "LORA", "use_dora": True, "r": 3, "lora_alpha": 3, "fan_in_fan_out": True, "target_modules": ["c_attn"]}
    got, _ = adapter(tmp_path, cfg, T, W)
    Vt = W["h.c_attn.weight"].T.astype(np.float64) + (T["h.c_attn.lora_B.weight"] @ T["h.c_attn.lora_A.weight"])
    want = (T["h.c_attn.lora_magnitude_vector"][:, None] / np.linalg.norm(Vt, axis=1, keepdims=True) * Vt).T
    np.testing.assert_allclose(got["h.c_attn.weight"], want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("variant,r,mini,shape,key", [("standard", 3, None, (3, 16), "miss_block"), ("mini", 5, 4, (5, 4), "miss_block"),
                                                      ("bat", 4, None, (4, 4, 4), "miss_block"), ("standard", 4, None, (4, 16), "bone_block")])
def test_miss_and_bone(tmp_path, variant, r, mini, shape, key):
    rng = np.random.default_rng(3)
    W = {"l.up_proj.weight": rng.standard_normal((16, 12)).astype(np.float32)}
    B = rng.standard_normal(shape)
    cfg = {"peft_type": "BONE" if key == "bone_block" else "MISS", "r": r, "target_modules": ["up_proj"],
           "init_weights": {"standard": True, "mini": "mini", "bat": "bat"}[variant]}
    if mini:
        cfg["mini_r"] = mini
    got, _ = adapter(tmp_path, cfg, {f"l.up_proj.{key}": B}, W)
    w = W["l.up_proj.weight"].astype(np.float64)
    out, inp = w.shape
    if variant == "bat":
        want = w.copy()
        for a in range(out // r):
            for c in range(inp // r):
                tile = w[a * r:(a + 1) * r, c * r:(c + 1) * r]
                want[a * r:(a + 1) * r, c * r:(c + 1) * r] = tile @ (np.eye(r) + B[a]) + B[a]
    else:
        i = np.arange(inp) % r
        o = np.arange(out) % B.shape[1]
        want = w + B[i][:, o].T
    np.testing.assert_allclose(got["l.up_proj.weight"], want, rtol=1e-6, atol=1e-6)


def torch_randperm_prefix(n, k, seed):
    """aten randperm_cpu (n < 2^32/20): Fisher-Yates from the front on MT19937 32-bit draws."""
    bg = np.random.MT19937(0)
    bg._legacy_seeding(seed % 2 ** 32)
    r = np.arange(n)
    draws = bg.random_raw(k)
    for i in range(k):
        if i < n - 1:
            z = int(draws[i]) % (n - i)
            r[i], r[i + z] = r[i + z], r[i]
    return r[:k]


def test_randperm_transcription_matches_torch_values():
    assert torch_randperm_prefix(4096, 6, 777).tolist() == [2151, 945, 3161, 4091, 1983, 1566]
    assert torch_randperm_prefix(5, 5, 42).tolist() == [2, 4, 3, 0, 1]


@pytest.mark.parametrize("fifo", [False, True])
def test_fourierft(tmp_path, fifo):
    rng = np.random.default_rng(5)
    W = {"l.q_proj.weight": rng.standard_normal((24, 40)).astype(np.float32), "l.v_proj.weight": rng.standard_normal((24, 40)).astype(np.float32)}
    if fifo:
        W = {k: np.ascontiguousarray(v.T) for k, v in W.items()}
    T = {"l.q_proj.fourierft_spectrum": rng.standard_normal(50), "l.v_proj.fourierft_spectrum": rng.standard_normal(17)}
    cfg = {"peft_type": "FOURIERFT", "n_frequency": 50, "n_frequency_pattern": {"v_proj": 17}, "scaling": 30.0,
           "random_loc_seed": 1234, "fan_in_fan_out": fifo, "target_modules": ["q_proj", "v_proj"]}
    got, rep = adapter(tmp_path, cfg, T, W)
    for m in ("q_proj", "v_proj"):
        w = W[f"l.{m}.weight"].astype(np.float64)
        out, inp = (w.shape[1], w.shape[0]) if fifo else w.shape
        spec = T[f"l.{m}.fourierft_spectrum"].astype(np.float32)
        idx = torch_randperm_prefix(out * inp, len(spec), 1234)
        S = np.zeros((out, inp), np.complex128)
        S[idx // inp, idx % inp] = spec
        d = np.fft.ifft2(S).real * 30.0
        want = w + (d.T if fifo else d)
        np.testing.assert_allclose(got[f"l.{m}.weight"], want, rtol=1e-5, atol=2e-6)
    assert {r["name"]: r.get("frequencies") for r in rep["tensors"]}["l.v_proj.weight"] == 17


@pytest.mark.parametrize("cfg,tensors,needle", [
    ({"peft_type": "LORA", "use_dora": True, "r": 2, "lora_alpha": 2}, {"l.q_proj.lora_A.weight": (2, 8), "l.q_proj.lora_B.weight": (12, 2)}, "lora_magnitude_vector"),
    ({"peft_type": "MISS", "r": 5, "init_weights": "bat"}, {"l.q_proj.miss_block": (2, 5, 5)}, "[r, r] tiles"),
    ({"peft_type": "MISS", "r": 16}, {"l.q_proj.miss_block": (16, 12)}, "r <= in"),
    ({"peft_type": "FOURIERFT", "n_frequency": 10}, {"l.q_proj.fourierft_spectrum": (9,)}, "frequencies"),
    ({"peft_type": "FOURIERFT", "random_loc_seed": None}, {"l.q_proj.fourierft_spectrum": (9,)}, "random_loc_seed is null"),
    ({"peft_type": "LORA", "r": 2, "lora_alpha": 2}, {"l.q_proj.miss_block": (2, 12)}, "MiSS/Bone block"),
    ({"peft_type": "MISS", "r": 2}, {"l.missing.miss_block": (2, 12)}, "which the base does not have"),
])
def test_misuse_is_one_line_before_work(tmp_path, cfg, tensors, needle):
    rng = np.random.default_rng(0)
    save_file({"l.q_proj.weight": rng.standard_normal((12, 8)).astype(np.float32)}, str(tmp_path / "base.safetensors"))
    ad = tmp_path / "ad"
    ad.mkdir()
    save_file({P + k: rng.standard_normal(s).astype(np.float32) for k, s in tensors.items()}, str(ad / "adapter_model.safetensors"))
    json.dump(cfg | {"target_modules": ["q_proj"]}, open(ad / "adapter_config.json", "w"))
    code, _, err = run("lowrank-svd", "apply", "--base", tmp_path / "base.safetensors", ad, "-o", tmp_path / "m.safetensors", check=False)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.safetensors").exists()


TL = os.path.join(os.path.dirname(__file__), "..", "..", "Fixtures", "tiny-llama")


@pytest.mark.parametrize("rank", [2, 64])
def test_extract_dora_keeps_the_fine_tunes_magnitudes(tmp_path, rank):
    """--format dora: merged rows have FT's norms exactly; with a rank that holds the whole delta
    the merge is FT itself; the report's dora_relative_error is what the merge measures."""
    base, ft = f"{TL}/base", f"{TL}/ft-a"
    run("lowrank-svd", "extract", "--base", base, ft, "-o", tmp_path / "ad", "--rank", rank, "--format", "dora", "--quiet")
    cfg = json.load(open(tmp_path / "ad" / "adapter_config.json"))
    assert cfg["use_dora"] is True and cfg["peft_type"] == "LORA"
    ad = load_file(str(tmp_path / "ad" / "adapter_model.safetensors"))
    run("lowrank-svd", "apply", "--base", base, tmp_path / "ad", "-o", tmp_path / "m", "--quiet")
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    f, b = load_file(f"{ft}/model.safetensors"), load_file(f"{base}/model.safetensors")
    rows = {r["name"]: r for r in json.load(open(tmp_path / "ad" / "wtool-report.json"))["tensors"]}
    mags = [k for k in ad if k.endswith("lora_magnitude_vector")]
    assert mags
    for k in mags:
        name = k[len(P): -len(".lora_magnitude_vector")] + ".weight"
        np.testing.assert_allclose(ad[k], np.linalg.norm(f[name].astype(np.float64), axis=1), rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(merged[name].astype(np.float64), axis=1), np.linalg.norm(f[name].astype(np.float64), axis=1), rtol=1e-5)
        delta = np.linalg.norm(f[name].astype(np.float64) - b[name])
        err = np.linalg.norm(merged[name].astype(np.float64) - f[name]) / delta
        assert rows[name]["dora_relative_error"] == pytest.approx(err, rel=1e-3, abs=1e-6)
        if rank == 64:
            np.testing.assert_allclose(merged[name], f[name], rtol=1e-5, atol=1e-6)
        else:
            # a rank-2 truncation of a full-rank delta: the directions are approximate
            assert 0 < rows[name]["dora_relative_error"] < 1.5
