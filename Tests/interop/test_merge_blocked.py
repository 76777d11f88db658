"""The task-arithmetic family merges in row blocks (merge: every tensor, in blocks of at most 2^16
entries or WTOOL_BLOCK_ABOVE; task-vector apply: tensors above WTOOL_BLOCK_ABOVE): the output must not
depend on the blocks, byte for byte, for every sparsifier (TIES's top-k with ties at the threshold,
breadcrumbs' two cut-offs, DARE's and DELLA's random streams and L1 rescale), with blocks that split
rows, hold one row, or end off a multiple of 4. Without the variable these small tensors are one block
each (task-vector apply: the whole-tensor pipeline); the mergekit goldens check the values themselves."""
import json, os, subprocess
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from conftest import WTOOL

METHODS = [
    ("ties", []),
    ("task_arithmetic", ["--param", "normalize=true"]),  # linear: streamed either way, checked for completeness
    ("dare_ties", ["--seed", "3"]),
    ("dare_linear", ["--seed", "3", "--param", "rescale=l1"]),
    ("dare_linear", ["--seed", "5", "--param", "rescale=inverse_density"]),
    ("breadcrumbs", ["--param", "gamma=0.05"]),
    ("breadcrumbs_ties", ["--param", "gamma=0.2"]),
    ("della", ["--seed", "9", "--param", "epsilon=0.1"]),
    ("della_linear", ["--seed", "9", "--param", "epsilon=0.1", "--param", "rescale=inverse_density"]),
]


def wtool(args, block_above=None):
    env = dict(os.environ)
    if block_above is not None:
        env["WTOOL_BLOCK_ABOVE"] = str(block_above)
    r = subprocess.run([WTOOL, *map(str, args)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("blocked")
    rng = np.random.default_rng(11)
    base, fts = {}, [{}, {}, {}]
    # Odd shapes (rows not a multiple of 4 or 8), a 1-D tensor, and deltas with heavy ties (a few
    # distinct magnitudes) so the thresholds fall among equal values.
    for name, shape in [("a.weight", (37, 53)), ("b.weight", (64, 96)), ("c.bias", (301,)), ("d.weight", (5, 2001))]:
        b = rng.standard_normal(shape).astype(np.float32)
        base[name] = b
        for k, ft in enumerate(fts):
            if k == 0:
                delta = rng.integers(-3, 4, size=shape).astype(np.float32) * 0.125
            else:
                delta = (rng.standard_normal(shape) * 0.1).astype(np.float32)
            ft[name] = b + delta
    save_file(base, d / "base.safetensors")
    for k, ft in enumerate(fts):
        save_file(ft, d / f"ft{k}.safetensors")
    return d


@pytest.mark.parametrize("method,extra", METHODS)
@pytest.mark.parametrize("block_above", [1, 100, 1000])
def test_blocked_merge_equals_whole(models, tmp_path, method, extra, block_above):
    d = models
    args = ["merge", "--method", method, "--base", d / "base.safetensors", d / "ft0.safetensors", d / "ft1.safetensors",
            d / "ft2.safetensors", "--weight", "1", "--weight", "0.5", "--weight", "0.75", "--quiet"]
    if method != "task_arithmetic":
        args += ["--density", "0.4"]
    whole = tmp_path / "whole.safetensors"
    blocked = tmp_path / "blocked.safetensors"
    wtool(args + ["-o", whole] + extra)
    wtool(args + ["-o", blocked] + extra, block_above=block_above)
    a, b = load_file(whole), load_file(blocked)
    assert set(a) == set(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), (method, block_above, k, int(np.sum(a[k] != b[k])))
    report = json.load(open(tmp_path / "blocked.report.json"))
    rows = {r["name"]: r for r in report["tensors"]}
    whole_rows = {r["name"]: r for r in json.load(open(tmp_path / "whole.report.json"))["tensors"]}
    if method != "task_arithmetic":
        blocked_names = [k for k, r in rows.items() if r.get("blocked")]
        assert sorted(blocked_names) == sorted(k for k in a if a[k].size > block_above)
        for k in blocked_names:  # the measured figures agree with the whole-tensor path's
            assert rows[k]["kept_fraction"] == whole_rows[k]["kept_fraction"]
            assert rows[k]["relative_change"] == pytest.approx(whole_rows[k]["relative_change"], rel=1e-9)
            assert rows[k]["delta_norms"] == pytest.approx(whole_rows[k]["delta_norms"], rel=1e-9)


@pytest.mark.parametrize("method", ["ties", "dare"])
def test_blocked_task_vector_apply_equals_whole(models, tmp_path, method):
    d = models
    tv = tmp_path / "tv.safetensors"
    wtool(["task-vector", "extract", "--base", d / "base.safetensors", d / "ft0.safetensors", "-o", tv, "--quiet"])
    args = ["task-vector", "apply", "--base", d / "base.safetensors", tv, d / "ft1.safetensors", "--method", method,
            "--inputs", "auto", "--scale", "0.8,0.6", "--density", "0.3", "--quiet"]
    if method == "dare":
        args += ["--seed", "4"]
    wtool(args + ["-o", tmp_path / "whole.safetensors"])
    wtool(args + ["-o", tmp_path / "blocked.safetensors"], block_above=50)
    a, b = load_file(tmp_path / "whole.safetensors"), load_file(tmp_path / "blocked.safetensors")
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), (method, k)
    rows = json.load(open(tmp_path / "blocked.report.json"))["tensors"]
    assert all(r.get("blocked") for r in rows)


def test_block_above_must_be_positive(models, tmp_path):
    env = dict(os.environ, WTOOL_BLOCK_ABOVE="zero")
    r = subprocess.run([WTOOL, "merge", "--method", "ties", "--base", models / "base.safetensors", models / "ft0.safetensors",
                        "--weight", "1", "--density", "0.5", "-o", tmp_path / "o.safetensors", "--quiet"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "WTOOL_BLOCK_ABOVE" in r.stderr
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("method,param", [("slerp", "t=0.3"), ("nearswap", "t=0.05")])
@pytest.mark.parametrize("block_above", [1, 100, 1000])
def test_blocked_two_model_methods_equal_whole(models, tmp_path, method, param, block_above):
    d = models
    args = ["merge", "--method", method, "--base", d / "base.safetensors", d / "ft1.safetensors", "--param", param, "--quiet"]
    wtool(args + ["-o", tmp_path / "whole.safetensors"])
    wtool(args + ["-o", tmp_path / "blocked.safetensors"], block_above=block_above)
    a, b = load_file(tmp_path / "whole.safetensors"), load_file(tmp_path / "blocked.safetensors")
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), (method, block_above, k)
    rows = {r["name"]: r for r in json.load(open(tmp_path / "blocked.report.json"))["tensors"]}
    whole = {r["name"]: r for r in json.load(open(tmp_path / "whole.report.json"))["tensors"]}
    for k in a:
        assert bool(rows[k].get("blocked")) == (a[k].size > block_above), k
        if method == "slerp":
            assert rows[k]["cosine"] == whole[k]["cosine"]


OTHERS = [
    ("model_stock", True, 3, []), ("model_stock", True, 3, ["--param", "filter_wise=true"]),
    ("sce", True, 3, []), ("sce", True, 3, ["--param", "select_topk=0.4"]),
    ("nuslerp", True, 2, ["--weight", "0.3,0.7"]), ("nuslerp", False, 2, ["--weight", "0.3,0.7", "--param", "nuslerp_flatten=false"]),
    ("nuslerp", True, 2, ["--weight", "1,2", "--param", "nuslerp_flatten=false", "--param", "nuslerp_row_wise=true"]),
    ("multislerp", True, 3, ["--weight", "0.2,0.3,0.5"]), ("multislerp", False, 2, ["--weight", "1,1"]),
    ("karcher", False, 3, []), ("karcher", False, 2, ["--param", "max_iter=3"]),
]


@pytest.mark.parametrize("method,with_base,count,extra", OTHERS)
@pytest.mark.parametrize("block_above", [1, 100])
def test_blocked_other_methods_equal_whole(models, tmp_path, method, with_base, count, extra, block_above):
    d = models
    args = ["merge", "--method", method] + (["--base", d / "base.safetensors"] if with_base else [])
    args += [d / f"ft{k}.safetensors" for k in range(count)] + extra + ["--quiet"]
    wtool(args + ["-o", tmp_path / "whole.safetensors"])
    wtool(args + ["-o", tmp_path / "blocked.safetensors"], block_above=block_above)
    a, b = load_file(tmp_path / "whole.safetensors"), load_file(tmp_path / "blocked.safetensors")
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), (method, extra, block_above, k, int(np.sum(a[k] != b[k])))
    rows = {r["name"]: r for r in json.load(open(tmp_path / "blocked.report.json"))["tensors"]}
    whole = {r["name"]: r for r in json.load(open(tmp_path / "whole.report.json"))["tensors"]}
    for k in a:
        assert bool(rows[k].get("blocked")) == (a[k].size > block_above), k
        for key in ("ratio_t", "ratio_t_mean", "model_weights", "iterations"):
            if key in whole[k]:
                assert rows[k][key] == pytest.approx(whole[k][key], rel=1e-12), (k, key)
        if with_base:
            assert rows[k]["relative_change"] == pytest.approx(whole[k]["relative_change"], rel=1e-9)
