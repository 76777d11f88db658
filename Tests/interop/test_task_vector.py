"""wtool task-vector against numpy definitions (Ilharco et al.'s task arithmetic)."""
import json, os
import numpy as np
import ml_dtypes
import pytest
from safetensors.numpy import load_file, save_file
from conftest import FIX, run
from st_raw import read_raw

TL = f"{FIX}/tiny-llama"


def f32(path):
    """Every tensor of a file as f32 (bf16 decoded through ml_dtypes)."""
    out = {}
    for k, (dt, shape, data) in read_raw(path).items():
        np_dt = {"F32": np.float32, "F64": np.float64, "BF16": ml_dtypes.bfloat16, "F16": np.float16}[dt]
        out[k] = np.frombuffer(data, dtype=np_dt).reshape(shape).astype(np.float64 if dt == "F64" else np.float32)
    return out


def test_extract_is_ft_minus_base_and_records_the_base(tmp_path):
    run("task-vector", "extract", "--base", f"{TL}/base", f"{TL}/ft-a", "-o", tmp_path / "tv.safetensors", "--quiet")
    tv, base, ft = f32(tmp_path / "tv.safetensors"), load_file(f"{TL}/base/model.safetensors"), load_file(f"{TL}/ft-a/model.safetensors")
    for k in base:
        assert tv[k].tobytes() == (ft[k].astype(np.float64) - base[k]).astype(np.float32).tobytes(), k
    from safetensors import safe_open
    with safe_open(tmp_path / "tv.safetensors", "np") as f:
        meta = f.metadata()
    assert meta["wtool.kind"] == "task_vector" and len(json.loads(meta["wtool.base_checksums"])) == len(base)


@pytest.mark.parametrize("case", ["f32-model-f64-delta", "bf16-model-f32-delta", "model-on-the-fly"])
def test_extract_then_apply_gives_the_finetune_back_bit_for_bit(tmp_path, case):
    base, ft = f"{TL}/base", f"{TL}/ft-a"
    if case == "bf16-model-f32-delta":
        run("convert", base, "-o", tmp_path / "base16.safetensors", "--dtype", "bf16", "--quiet")
        base, ft = tmp_path / "base16.safetensors", f"{TL}/ft-bf16"
    tv = ft
    if case != "model-on-the-fly":
        tv = tmp_path / "tv.safetensors"
        run("task-vector", "extract", "--base", base, ft, "-o", tv, "--dtype", "f64" if case.startswith("f32") else "f32", "--quiet")
    run("task-vector", "apply", "--base", base, tv, "-o", tmp_path / "out.safetensors", "--quiet")
    ref = read_raw(ft if str(ft).endswith(".safetensors") else f"{ft}/model.safetensors")
    assert read_raw(tmp_path / "out.safetensors") == ref


def test_combinations_and_negation_equal_numpy(tmp_path):
    for name, ft in (("a", "ft-a"), ("b", "ft-sharded")):
        run("task-vector", "extract", "--base", f"{TL}/base", f"{TL}/{ft}", "-o", tmp_path / f"{name}.safetensors", "--dtype", "f64", "--quiet")
    run("task-vector", "apply", "--base", f"{TL}/base", tmp_path / "a.safetensors", tmp_path / "b.safetensors",
        "--scale", "0.8,-0.5", "-o", tmp_path / "out.safetensors", "--quiet")
    base = load_file(f"{TL}/base/model.safetensors")
    ta, tb, got = f32(tmp_path / "a.safetensors"), f32(tmp_path / "b.safetensors"), load_file(tmp_path / "out.safetensors")
    for k in base:
        expect = (base[k].astype(np.float64) + 0.8 * ta[k] + (-0.5) * tb[k]).astype(np.float32)
        assert got[k].tobytes() == expect.tobytes(), k


def test_ties_through_apply_equals_merge(tmp_path):
    """One pipeline: TIES of fine-tunes by task-vector apply and by merge give the same bytes."""
    run("task-vector", "apply", "--base", f"{TL}/base", f"{TL}/ft-a", f"{TL}/ft-sharded", "--method", "ties",
        "--density", "0.5", "-o", tmp_path / "tv.safetensors", "--quiet")
    run("merge", "--method", "ties", "--base", f"{TL}/base", f"{TL}/ft-a", f"{TL}/ft-sharded", "--weight", "1",
        "--density", "0.5", "-o", tmp_path / "merge.safetensors", "--quiet")
    assert read_raw(tmp_path / "tv.safetensors") == read_raw(tmp_path / "merge.safetensors")


def test_analyze_equals_numpy(tmp_path):
    _, out, _ = run("task-vector", "analyze", f"{TL}/ft-a", f"{TL}/ft-sharded", "--base", f"{TL}/base", "--spectrum", "--quiet")
    rep = json.loads(out)
    base = load_file(f"{TL}/base/model.safetensors")
    a = load_file(f"{TL}/ft-a/model.safetensors")
    b = {}
    for f in os.listdir(f"{TL}/ft-sharded"):
        if f.endswith(".safetensors"):
            b.update(load_file(f"{TL}/ft-sharded/{f}"))
    rows = {r["name"]: r for r in rep["tensors"]}
    dots = na = nb = 0.0
    for k in base:
        ta = (a[k].astype(np.float64) - base[k]).astype(np.float32).astype(np.float64).ravel()
        tb = (b[k].astype(np.float64) - base[k]).astype(np.float32).astype(np.float64).ravel()
        cos = ta @ tb / np.linalg.norm(ta) / np.linalg.norm(tb)
        assert rows[k]["cosine"][0] == pytest.approx(cos, abs=1e-6), k
        assert rows[k]["norm"][0] == pytest.approx(np.linalg.norm(ta), rel=1e-9)
        both = (ta != 0) & (tb != 0)
        assert rows[k]["sign_conflict_fraction"][0] == pytest.approx(np.mean(np.sign(ta[both]) != np.sign(tb[both])))
        if base[k].ndim == 2:
            s = np.linalg.svd(ta.reshape(base[k].shape), compute_uv=False)
            assert rows[k]["spectrum"][0]["top_singular_values"] == pytest.approx(s[:8], rel=1e-4)
            e = np.cumsum(s ** 2) / np.sum(s ** 2)
            assert rows[k]["spectrum"][0]["energy_rank_90"] == int(np.searchsorted(e, 0.9 - 1e-12) + 1)
        dots += ta @ tb; na += ta @ ta; nb += tb @ tb
    assert rep["summary"]["cosine_matrix"][0][1] == pytest.approx(dots / np.sqrt(na * nb), abs=1e-6)


def test_bf16_storage_loses_exactness_f32_does_not(tmp_path):
    """The round-trip error of a bf16 task vector against an f32 one, on bf16 models (the numbers
    wtool-task-vector(1) states)."""
    run("convert", f"{TL}/base", "-o", tmp_path / "base16.safetensors", "--dtype", "bf16", "--quiet")
    ref = f32(f"{TL}/ft-bf16/model.safetensors")
    fractions = {}
    for dt in ("f32", "bf16"):
        run("task-vector", "extract", "--base", tmp_path / "base16.safetensors", f"{TL}/ft-bf16", "-o", tmp_path / f"tv-{dt}.safetensors",
            "--dtype", dt, "--quiet")
        run("task-vector", "apply", "--base", tmp_path / "base16.safetensors", tmp_path / f"tv-{dt}.safetensors", "-o", tmp_path / f"o-{dt}.safetensors", "--quiet")
        got = f32(tmp_path / f"o-{dt}.safetensors")
        same = sum(int((got[k] == ref[k]).sum()) for k in ref)
        fractions[dt] = same / sum(v.size for v in ref.values())
    print("exact fractions", fractions)
    assert fractions["f32"] == 1.0
    assert 0.9 < fractions["bf16"] < 1.0, fractions
