"""StatsQ (OFQ's statistical quantizer) against a numpy transcription of the authors' rule and the
worked example of the reference; its compressed-tensors form decodes to the same values."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import run
from test_quantize import ct_unpack, sqnr


def statsq_reference(w, bits):
    """OFQ StatsQuantizer on a 2-D weight: s = 2·mean|w| per output row, x = clamp(w/s, -1, 1-1e-6),
    k = round_half_even(x·n - 0.5) with n = 2^(b-1) (clamped to [-n, n-1]), value s(k + 0.5)/n."""
    s = (2 * np.abs(w.astype(np.float64)).mean(axis=1, keepdims=True)).astype(np.float32)
    x = np.clip(w / s, np.float32(-1), np.float32(1 - 1e-6))
    n = 2 ** (bits - 1)
    k = np.clip(np.round(x * np.float32(n) - np.float32(0.5)), -n, n - 1)
    return (s * (k + np.float32(0.5)) / np.float32(n)).astype(np.float32), k


def test_worked_example(tmp_path):
    row = np.array([0.9, -0.3, 0.05, -1.2, 0.4, 0.0, 0.25, -0.6], np.float32)
    save_file({"layer.weight": np.tile(row, (4, 4))}, str(tmp_path / "w.safetensors"))
    want = {2: [0.69375, -0.23125, 0.23125, -0.69375, 0.23125, 0.23125, 0.23125, -0.69375],
            3: [0.809375, -0.346875, 0.115625, -0.809375, 0.346875, 0.115625, 0.346875, -0.578125],
            4: [0.8671875, -0.2890625, 0.0578125, -0.8671875, 0.4046875, 0.0578125, 0.2890625, -0.6359375]}
    for bits, values in want.items():
        out = tmp_path / f"s{bits}.safetensors"
        run("quantize", tmp_path / "w.safetensors", "-o", out, "--scheme", f"statsq{bits}", "--format", "fake", "--quiet")
        got = load_file(str(out))["layer.weight"][0, :8]
        np.testing.assert_allclose(got, values, rtol=1e-6)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_matches_numpy_rule_and_compressed_tensors_decodes_it(tmp_path, bits, dtype):
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal((48, 96)) * rng.uniform(0.1, 3, size=(48, 1))).astype(dtype)
    w[5] = 0           # an all-zero row
    w[6, 3] = 40       # an outlier: clipped at 2·mean|w|
    src = tmp_path / "model"
    src.mkdir()
    save_file({"layer.weight": w, "layer.bias": np.ones(48, dtype)}, str(src / "model.safetensors"))
    json.dump({"model_type": "llama"}, open(src / "config.json", "w"))
    run("quantize", src, "-o", tmp_path / "fake", "--scheme", f"statsq{bits}", "--format", "fake", "--quiet")
    run("quantize", src, "-o", tmp_path / "ct", "--scheme", f"statsq{bits}", "--format", "compressed-tensors", "--quiet")
    fake = load_file(str(tmp_path / "fake" / "model.safetensors"))
    ref, k = statsq_reference(w.astype(np.float32), bits)
    # an all-zero row: the authors' code divides by zero (NaN); wtool uses the scale dtype's epsilon
    assert np.isnan(ref[5]).all() and np.abs(fake["layer.weight"][5]).max() < 1e-3
    ref[5] = fake["layer.weight"][5]
    k[5] = 0
    if dtype == np.float32:
        # f32 scales: the exact rule, bit for bit
        assert fake["layer.weight"].tobytes() == ref.tobytes()
    else:
        np.testing.assert_allclose(fake["layer.weight"].astype(np.float32), ref, rtol=2e-3, atol=1e-6)
    levels = np.unique(fake["layer.weight"][7])
    assert len(levels) <= 2 ** bits and 0 not in levels
    # compressed-tensors: (b+1)-bit symmetric ints 2k+1, scale s/2n, no zero point
    t = load_file(str(tmp_path / "ct" / "model.safetensors"))
    q = ct_unpack(t["layer.weight_packed"], 96, bits + 1)
    assert set(np.unique(q)) <= set(range(-(2 ** bits) + 1, 2 ** bits, 2))
    if dtype == np.float32:
        np.testing.assert_array_equal(q, 2 * k.astype(np.int64) + 1)
    scale = t["layer.weight_scale"]
    assert scale.shape == (48, 1) and "layer.weight_zero_point" not in t
    dec = (q.astype(scale.dtype) * scale).astype(dtype)
    assert dec.tobytes() == fake["layer.weight"].tobytes()
    cfg = json.load(open(tmp_path / "ct" / "config.json"))["quantization_config"]
    g = next(iter(cfg["config_groups"].values()))["weights"]
    assert g["num_bits"] == bits + 1 and g["symmetric"] is True and g["strategy"] == "channel"
    # the report puts min-max RTN's SQNR beside StatsQ's
    rep = next(r for r in json.load(open(tmp_path / "fake" / "wtool-report.json"))["tensors"] if r["name"] == "layer.weight")
    assert rep["sqnr_db"] == pytest.approx(sqnr(w.astype(np.float32), fake["layer.weight"].astype(np.float32)), abs=1e-4)
    # min-max RTN (compressed-tensors' symmetric rule, per row) at the same bit width
    x = w.astype(np.float32)
    scale = (np.abs(x).max(axis=1, keepdims=True) / np.float32((2 ** bits - 1) / 2)).astype(dtype).astype(np.float32)
    scale[scale == 0] = np.finfo(dtype).eps
    rtn = (np.clip(np.round(x / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * scale).astype(dtype).astype(np.float32)
    assert rep["rtn_sqnr_db"] == pytest.approx(sqnr(x, rtn), abs=1e-3)


def test_statsq_refuses_options_it_ignores(tmp_path):
    src = tmp_path / "w.safetensors"
    save_file({"layer.weight": np.ones((8, 32), np.float32)}, str(src))
    for extra in (["--granularity", "group"], ["--group-size", "32"], ["--asymmetric"], ["--format", "gguf"]):
        code, _, err = run("quantize", src, "-o", tmp_path / "o", "--scheme", "statsq3", *extra, check=False)
        assert code == 2, (extra, err)
        assert not (tmp_path / "o").exists()
