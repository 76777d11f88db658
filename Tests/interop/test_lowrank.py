"""wtool lowrank-svd spectrum and compress against numpy's SVD (Eckart-Young, rank measures)."""
import json
import numpy as np
import pytest
from safetensors.numpy import save_file, load_file
from conftest import FIX, run


def decaying(tmp_path, m=160, n=96, seed=0):
    """Weights with realistic decaying spectra (power law plus a floor), not flat noise."""
    rng = np.random.default_rng(seed)
    def mat():
        u, _ = np.linalg.qr(rng.standard_normal((m, n)))
        v, _ = np.linalg.qr(rng.standard_normal((n, n)))
        s = 1.0 / np.arange(1, n + 1) ** 1.0 + 0.002
        return (u * s) @ v.T
    t = {f"model.layers.{i}.mlp.up_proj.weight": mat().astype(np.float32) for i in range(2)}
    t["model.layers.0.self_attn.q_proj.weight"] = mat()[:, :96].T.copy().astype(np.float32)
    t["model.norm.weight"] = np.ones(96, np.float32)
    p = tmp_path / "m.safetensors"
    save_file(t, p)
    return p, t


def optimum(a, k):
    s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    return np.sqrt((s[k:] ** 2).sum() / (s ** 2).sum())


def test_exact_compression_reaches_the_eckart_young_optimum(tmp_path):
    src, t = decaying(tmp_path)
    run("lowrank-svd", "compress", src, "-o", tmp_path / "o.safetensors", "--rank", "8", "--svd", "exact", "--quiet")
    got = load_file(tmp_path / "o.safetensors")
    rep = {r["name"]: r for r in json.load(open(tmp_path / "o.report.json"))["tensors"]}
    for k, a in t.items():
        if a.ndim == 1:
            assert np.array_equal(got[k], a)
            continue
        opt = optimum(a, 8)
        measured = np.linalg.norm(got[k].astype(np.float64) - a) / np.linalg.norm(a.astype(np.float64))
        assert measured == pytest.approx(opt, rel=1e-4)
        assert rep[k]["relative_error"] == pytest.approx(opt, rel=1e-4)
        assert rep[k]["rank"] == 8 and rep[k]["svd"] == "exact"


def test_automatic_rule_is_exact_where_exact_is_cheap(tmp_path):
    """The issue's case: rank 4 of a 64 x 160 matrix. Without --svd, the result is the Eckart-Young
    optimum (exact SVD), not the randomized approximation, in compress, extract, pissa and
    principal pruning alike."""
    rng = np.random.default_rng(4)
    a = (rng.standard_normal((64, 160)) * (1.0 / np.arange(1, 161) ** 0.5)).astype(np.float32)
    base = {"model.layers.0.mlp.up_proj.weight": np.zeros((64, 160), np.float32)}
    save_file({"model.layers.0.mlp.up_proj.weight": a}, tmp_path / "m.safetensors")
    save_file(base, tmp_path / "b.safetensors")
    run("lowrank-svd", "compress", tmp_path / "m.safetensors", "-o", tmp_path / "o.safetensors", "--rank", "4", "--quiet")
    got = load_file(tmp_path / "o.safetensors")["model.layers.0.mlp.up_proj.weight"]
    err = np.linalg.norm(got.astype(np.float64) - a) / np.linalg.norm(a.astype(np.float64))
    assert err == pytest.approx(optimum(a, 4), rel=1e-5)
    assert json.load(open(tmp_path / "o.report.json"))["tensors"][0]["svd"] == "exact"
    # forcing randomized on the same matrix lands above the optimum: the default made a difference
    run("lowrank-svd", "compress", tmp_path / "m.safetensors", "-o", tmp_path / "r.safetensors", "--rank", "4",
        "--svd", "randomized", "--power-iters", "0", "--oversample", "2", "--quiet")
    r = load_file(tmp_path / "r.safetensors")["model.layers.0.mlp.up_proj.weight"]
    assert np.linalg.norm(r.astype(np.float64) - a) / np.linalg.norm(a.astype(np.float64)) > optimum(a, 4) * 1.001
    run("lowrank-svd", "extract", "--base", tmp_path / "b.safetensors", tmp_path / "m.safetensors", "-o", tmp_path / "ad", "--rank", "4", "--quiet")
    assert json.load(open(tmp_path / "ad" / "wtool-report.json"))["tensors"][0]["svd"] == "exact"
    run("prune-sparse", tmp_path / "m.safetensors", "-o", tmp_path / "p.safetensors", "--method", "principal", "--rank", "4", "--quiet")
    rows = [t for t in json.load(open(tmp_path / "p.report.json"))["tensors"] if t["target"]]
    assert rows[0]["svd"] == "exact"


def test_automatic_rule_goes_randomized_only_on_large_matrices(tmp_path):
    """Above m*n*min(m,n) = 2^29 with a small rank the randomized SVD runs (and says so)."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((1024, 1024)).astype(np.float32)
    save_file({"model.layers.0.mlp.up_proj.weight": a}, tmp_path / "m.safetensors")
    run("lowrank-svd", "compress", tmp_path / "m.safetensors", "-o", tmp_path / "o.safetensors", "--rank", "8", "--quiet")
    assert json.load(open(tmp_path / "o.report.json"))["tensors"][0]["svd"] == "randomized"


@pytest.mark.parametrize("q", ["2", "7"])
def test_randomized_is_within_one_percent_of_optimal(tmp_path, q):
    src, t = decaying(tmp_path)
    run("lowrank-svd", "compress", src, "-o", tmp_path / "o.safetensors", "--rank", "12", "--svd", "randomized",
        "--power-iters", q, "--seed", "3", "--quiet")
    rep = {r["name"]: r for r in json.load(open(tmp_path / "o.report.json"))["tensors"]}
    for k, a in t.items():
        if a.ndim == 2:
            assert rep[k]["svd"] == "randomized"
            assert rep[k]["relative_error"] <= optimum(a, 12) * 1.01, k


def test_randomized_is_deterministic_whatever_the_threads(tmp_path):
    src, _ = decaying(tmp_path)
    outs = []
    for threads in ("1", "2"):
        out = tmp_path / f"o{threads}.safetensors"
        run("lowrank-svd", "compress", src, "-o", out, "--rank", "6", "--svd", "randomized", "--threads", threads, "--quiet")
        outs.append(open(out, "rb").read())
    assert outs[0] == outs[1]


def test_factored_output_multiplies_back(tmp_path):
    src, t = decaying(tmp_path)
    run("lowrank-svd", "compress", src, "-o", tmp_path / "f.safetensors", "--rank", "5", "--factored", "--svd", "exact", "--quiet")
    run("lowrank-svd", "compress", src, "-o", tmp_path / "p.safetensors", "--rank", "5", "--svd", "exact", "--quiet")
    f, p = load_file(tmp_path / "f.safetensors"), load_file(tmp_path / "p.safetensors")
    for k, a in t.items():
        if a.ndim == 2:
            assert f[k + ".left"].shape == (a.shape[0], 5) and f[k + ".right"].shape == (5, a.shape[1])
            assert np.allclose(f[k + ".left"] @ f[k + ".right"], p[k], atol=1e-6)


@pytest.mark.parametrize("tau", [0.5, 0.9, 0.99])
def test_energy_rank_rule_equals_numpy(tmp_path, tau):
    src, t = decaying(tmp_path)
    run("lowrank-svd", "compress", src, "-o", tmp_path / "o.safetensors", "--energy", str(tau), "--quiet")
    rep = {r["name"]: r for r in json.load(open(tmp_path / "o.report.json"))["tensors"]}
    for k, a in t.items():
        if a.ndim == 2:
            s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
            e = np.cumsum(s ** 2) / np.sum(s ** 2)
            assert rep[k]["rank"] == int(np.searchsorted(e, tau) + 1), k
            assert rep[k]["energy_kept"] >= tau


def test_spectrum_measures_equal_numpy(tmp_path):
    src, t = decaying(tmp_path)
    _, out, _ = run("lowrank-svd", "spectrum", src, "--all", "--quiet")
    rows = {r["name"]: r for r in json.loads(out)["tensors"]}
    for k, a in t.items():
        if a.ndim != 2:
            continue
        s = np.linalg.svd(a.astype(np.float64), compute_uv=False)
        r = rows[k]
        assert np.allclose(r["singular_values"], s, rtol=1e-4, atol=1e-6)
        assert r["numerical_rank"] == np.linalg.matrix_rank(a.astype(np.float32))
        assert r["stable_rank"] == pytest.approx((s ** 2).sum() / s[0] ** 2, rel=1e-4)
        p = s / s.sum()
        assert r["effective_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-4)
        e = np.cumsum(s ** 2) / np.sum(s ** 2)
        for tau, key in ((0.5, "energy_rank_50"), (0.9, "energy_rank_90"), (0.99, "energy_rank_99")):
            assert r[key] == int(np.searchsorted(e, tau) + 1)


def test_intruder_dimensions_equal_numpy(tmp_path):
    TL = f"{FIX}/tiny-llama"
    _, out, _ = run("lowrank-svd", "spectrum", f"{TL}/ft-a", "--base", f"{TL}/base", "--intruders", "--intruder-epsilon", "0.9", "--quiet")
    rows = {r["name"]: r for r in json.loads(out)["tensors"]}
    base, ft = load_file(f"{TL}/base/model.safetensors"), load_file(f"{TL}/ft-a/model.safetensors")
    for k, r in rows.items():
        ub = np.linalg.svd(base[k].astype(np.float64), full_matrices=False)[0]
        ut = np.linalg.svd(ft[k].astype(np.float64), full_matrices=False)[0]
        sims = np.abs(ut[:, :10].T @ ub).max(axis=1)
        assert np.allclose(r["intruder_similarities"], sims, atol=1e-3), k
        assert r["intruders"] == int((sims < 0.9).sum())
