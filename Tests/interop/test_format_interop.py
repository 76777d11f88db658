"""wtool and the reference safetensors implementation read each other's files."""
import json, math, os
import numpy as np
import ml_dtypes
import pytest
from safetensors import safe_open, deserialize
from safetensors.numpy import save_file, load_file
from conftest import FIX, run
from st_raw import read_raw, write_raw


def test_every_dtype_copies_through_bit_for_bit(tmp_path):
    out = tmp_path / "out.safetensors"
    run("convert", f"{FIX}/dtypes.safetensors", "-o", out, "--quiet")
    assert read_raw(out) == read_raw(f"{FIX}/dtypes.safetensors")
    with safe_open(out, "np") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and meta["wtool.version"]


@pytest.mark.parametrize("name", sorted(os.listdir(f"{FIX}/edge")))
def test_edge_cases_round_trip_through_the_reference_reader(tmp_path, name):
    src = f"{FIX}/edge/{name}"
    out = tmp_path / "out.safetensors"
    run("convert", src, "-o", out, "--quiet")
    # The reference reads what wtool wrote, with the same tensors and bytes.
    assert read_raw(out) == read_raw(src)


def test_layout_is_the_reference_writers(tmp_path):
    """Same tensors written by Python and by wtool: identical header order and padding (the
    metadata differs only by wtool's provenance keys, so compare parsed headers)."""
    rng = np.random.default_rng(3)
    tensors = {"b": rng.standard_normal((3, 5)).astype(np.float32), "a": rng.integers(0, 9, 7).astype(np.int64),
               "c": rng.standard_normal(4).astype(np.float16), "é": np.zeros((0, 3), np.float32), "d": np.ones(3, np.uint8)}
    ref = tmp_path / "ref.safetensors"
    save_file(tensors, ref)
    out = tmp_path / "wt.safetensors"
    run("convert", ref, "-o", out, "--quiet")

    def header(p):
        raw = open(p, "rb").read()
        n = int.from_bytes(raw[:8], "little")
        assert n % 8 == 0
        h = json.loads(raw[8:8 + n])
        h.pop("__metadata__", None)
        return h, raw[8 + n:]
    (h1, d1), (h2, d2) = header(ref), header(out)
    assert list(h1) == list(h2) and h1 == h2 and d1 == d2


def test_reads_what_python_writes_without_metadata(tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, p)
    _, out, _ = run("inspect", p, "--json", "--stats")
    rep = json.loads(out)
    assert rep["summary"]["metadata"] is None
    s = rep["tensors"][0]["stats"]
    assert s["mean"] == 2.5 and s["max"] == 5 and s["min"] == 0


def test_stats_equal_numpy_for_every_numeric_dtype():
    _, out, _ = run("inspect", f"{FIX}/dtypes.safetensors", "--json", "--stats")
    rows = {r["name"]: r for r in json.loads(out)["tensors"]}
    decode = {"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
              "F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64, "U64": np.uint64,
              "I32": np.int32, "U32": np.uint32, "I16": np.int16, "U16": np.uint16, "I8": np.int8, "U8": np.uint8,
              "BOOL": np.bool_}
    for name, (dt, shape, data) in read_raw(f"{FIX}/dtypes.safetensors").items():
        x = np.frombuffer(data, dtype=decode[dt]).astype(np.float64)
        fin = x[np.isfinite(x)]
        s = rows[name]["stats"]
        assert s["nan_count"] == int(np.isnan(x).sum()), name
        assert s["inf_count"] == int(np.isinf(x).sum()), name
        assert s["zero_fraction"] == pytest.approx((x == 0).sum() / x.size), name
        # Exactly rounded sums (math.fsum): the fixture mixes +-1e30 with small values, where
        # numpy's pairwise sum loses digits and wtool's compensated sum does not.
        mean = math.fsum(fin) / fin.size
        std = math.sqrt(math.fsum((fin - mean) ** 2) / fin.size)
        for key, ref in (("min", fin.min()), ("max", fin.max()), ("mean", mean), ("std", std),
                         ("l2_norm", math.sqrt(math.fsum(fin ** 2)))):
            if not np.isfinite(ref):
                assert s[key] is None and s[key + "_nonfinite"], (name, key)
            else:
                assert s[key] == pytest.approx(ref, rel=1e-12, abs=1e-300), (name, key)


def test_sharded_output_loads_and_its_index_is_right(tmp_path):
    out = tmp_path / "sharded"
    run("convert", f"{FIX}/tiny-llama/base", "-o", out, "--shard-size", "20KB", "--quiet")
    index = json.load(open(out / "model.safetensors.index.json"))
    files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
    assert len(files) >= 3 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    original = load_file(f"{FIX}/tiny-llama/base/model.safetensors")
    loaded = {}
    for f in files:
        shard = load_file(out / f)
        assert all(index["weight_map"][k] == f for k in shard)
        loaded.update(shard)
    assert set(loaded) == set(original) == set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in original.values())
    for k, v in original.items():
        assert np.array_equal(loaded[k], v)
    assert json.load(open(out / "config.json")) == json.load(open(f"{FIX}/tiny-llama/base/config.json"))


def test_reads_the_python_sharded_fixture_like_the_single_file(tmp_path):
    out = tmp_path / "one.safetensors"
    run("convert", f"{FIX}/tiny-llama/ft-sharded", "-o", out, "--quiet")
    merged = {}
    for f in sorted(os.listdir(f"{FIX}/tiny-llama/ft-sharded")):
        if f.endswith(".safetensors"):
            merged.update(load_file(f"{FIX}/tiny-llama/ft-sharded/{f}"))
    got = load_file(out)
    assert set(got) == set(merged) and all(np.array_equal(got[k], merged[k]) for k in merged)


def test_diff_metrics_equal_numpy():
    status, out, _ = run("diff", f"{FIX}/tiny-llama/base", f"{FIX}/tiny-llama/ft-a", "--json", check=False)
    assert status == 1
    rows = {r["name"]: r for r in json.loads(out)["tensors"]}
    a, b = load_file(f"{FIX}/tiny-llama/base/model.safetensors"), load_file(f"{FIX}/tiny-llama/ft-a/model.safetensors")
    for k in a:
        x, y = a[k].astype(np.float64).ravel(), b[k].astype(np.float64).ravel()
        assert rows[k]["max_abs_diff"] == pytest.approx(np.abs(y - x).max(), rel=1e-12)
        assert rows[k]["relative_diff"] == pytest.approx(np.linalg.norm(y - x) / np.linalg.norm(x), rel=1e-9)
        assert rows[k]["cosine"] == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), rel=1e-12)


MALFORMED = json.load(open(f"{FIX}/malformed/expected.json"))
# Files the reference reader accepts but wtool rejects on purpose (stricter, documented).
STRICTER = {"duplicate-name.safetensors"}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_input_exits_1_with_one_line_and_no_output(tmp_path, name):
    src = f"{FIX}/malformed/{name}"
    out = tmp_path / "out"
    status, stdout, stderr = run("convert", src, "-o", out, "--dtype", "bf16", check=False)
    lines = stderr.strip().splitlines()
    assert status == 1, stderr
    assert len(lines) == 1 and lines[0].startswith("wtool: error: "), stderr
    assert MALFORMED[name] in lines[0], lines[0]
    assert os.path.basename(src) in lines[0] or name in lines[0]
    assert os.listdir(tmp_path) == []
    # The independent reference rejects the same single files (except where wtool is stricter).
    if os.path.isfile(src) and name not in STRICTER:
        with pytest.raises(Exception):
            deserialize(open(src, "rb").read())


def test_diff_summary_groups_layers_and_measures_like_numpy(tmp_path):
    """diff --summary: one group per projection across layers; changed layers listed; the group's
    relative change is sqrt(sum ||b-a||^2) / sqrt(sum ||a||^2) over its tensors (numpy, f64)."""
    import json as _json
    from safetensors.numpy import load_file as _load, save_file as _save
    base = _load(os.path.join(FIX, "tiny-llama", "base", "model.safetensors"))
    ft = {k: v.copy() for k, v in base.items()}
    ft["model.layers.1.mlp.up_proj.weight"] += 0.5
    ft["model.norm.weight"] *= 2
    _save(base, str(tmp_path / "a.safetensors")); _save(ft, str(tmp_path / "b.safetensors"))
    code, out, _ = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--summary", check=False)
    assert code == 1
    lines = {l.split(":")[0]: l for l in out.strip().splitlines()}
    assert "(layers 1)" in lines["model.layers.*.mlp.up_proj.weight"] and "1 of 2 changed" in lines["model.layers.*.mlp.up_proj.weight"]
    assert lines["model.layers.*.self_attn.q_proj.weight"].endswith("unchanged")
    code, js, _ = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--json", check=False)
    assert "groups" not in _json.loads(js)["summary"]   # a plain diff stays a byte comparison for identical tensors
    code, js, _ = run("diff", tmp_path / "a.safetensors", tmp_path / "b.safetensors", "--json", "--summary", check=False)
    groups = {g["group"]: g for g in _json.loads(js)["summary"]["groups"]}
    g = groups["model.layers.*.mlp.up_proj.weight"]
    a0, a1 = (base[f"model.layers.{i}.mlp.up_proj.weight"].astype(np.float64) for i in (0, 1))
    want = np.sqrt(((ft["model.layers.1.mlp.up_proj.weight"] - a1.astype(np.float32)).astype(np.float64) ** 2).sum() / ((a0 ** 2).sum() + (a1 ** 2).sum()))
    assert g["changed_layers"] == [1] and g["relative_change"] == pytest.approx(want, rel=1e-7)
    assert groups["model.norm.weight"]["relative_change"] == pytest.approx(1.0, rel=1e-7)
