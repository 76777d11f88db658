"""wtool merge against mergekit's own outputs (Fixtures/mergekit, made by mergekit 0.1.5) and
against numpy implementations of the methods' definitions."""
import json, os
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from conftest import FIX, run

MK = f"{FIX}/mergekit"
DETERMINISTIC = ["linear", "slerp", "slerp_gradient", "nuslerp", "multislerp", "karcher", "task_arithmetic",
                 "ties", "breadcrumbs_ties", "model_stock", "sce", "nearswap"]


def merged(tmp_path, recipe, *extra):
    out = tmp_path / f"{recipe}.safetensors"
    run("merge", "--config", f"{MK}/{recipe}.yml", "-o", out, "--quiet", *extra)
    return load_file(out), json.load(open(tmp_path / f"{recipe}.report.json"))


@pytest.mark.parametrize("recipe", DETERMINISTIC)
def test_reproduces_mergekit(tmp_path, recipe):
    got, _ = merged(tmp_path, recipe)
    ref = load_file(f"{MK}/outputs/{recipe}.safetensors")
    assert set(got) == set(ref)
    for k, r in ref.items():
        assert got[k].dtype == r.dtype and got[k].shape == r.shape, k
        err = np.linalg.norm(got[k].astype(np.float64) - r) / max(np.linalg.norm(r.astype(np.float64)), 1e-30)
        assert err <= 1e-5, (recipe, k, err)


def test_dare_ties_statistics(tmp_path):
    got, report = merged(tmp_path, "dare_ties", "--seed", "7")
    rows = {r["name"]: r for r in report["tensors"]}
    base = load_file(f"{MK}/models/base/model.safetensors")
    ref = load_file(f"{MK}/outputs/dare_ties.safetensors")
    for k, b in base.items():
        if b.size < 1024:
            continue
        # Each delta keeps about density = 0.4 of its entries (binomial: 5 sigma bound).
        for kept in rows[k]["kept_fraction"]:
            assert abs(kept - 0.4) < 5 * np.sqrt(0.24 / b.size), (k, kept)
        # Same process as mergekit's draw: an entry changes unless both models dropped it, so about
        # 1 - 0.6^2 = 64% of entries change in both outputs (binomial: 5 sigma bound).
        ours, theirs = np.mean(got[k] != b), np.mean(ref[k] != b)
        assert abs(ours - theirs) < 5 * np.sqrt(2 * 0.64 * 0.36 / b.size), (k, ours, theirs)
        assert abs(ours - 0.64) < 5 * np.sqrt(0.64 * 0.36 / b.size), (k, ours)


def test_dare_rescale_rules(tmp_path):
    """dare_linear with one model at weight 1: the output's delta is the kept delta, rescaled to the
    original L1 norm (mergekit's rule) or divided by the density (the DARE paper's)."""
    rng = np.random.default_rng(0)
    base = {"w": rng.standard_normal((256, 256)).astype(np.float32)}
    ft = {"w": base["w"] + rng.standard_normal((256, 256)).astype(np.float32) * 0.01}
    save_file(base, tmp_path / "b.safetensors"); save_file(ft, tmp_path / "f.safetensors")
    delta = ft["w"].astype(np.float64) - base["w"]
    for rule in ("l1", "inverse_density"):
        out = tmp_path / f"{rule}.safetensors"
        run("merge", "--method", "dare_linear", "--base", tmp_path / "b.safetensors", tmp_path / "f.safetensors",
            "--weight", "1", "--density", "0.3", "--param", f"rescale={rule}", "-o", out, "--quiet")
        d = load_file(out)["w"].astype(np.float64) - base["w"]
        kept = np.abs(d) > 1e-9
        assert abs(kept.mean() - 0.3) < 5 * np.sqrt(0.21 / d.size)
        if rule == "l1":
            assert np.abs(d).sum() == pytest.approx(np.abs(delta).sum(), rel=1e-4)
        else:
            assert np.allclose(d[kept], delta[kept] / 0.3, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rule", ["l1", "inverse_density"])
def test_della_keeps_by_rank_within_rows(tmp_path, rule):
    """della_linear with one model at weight 1 on a zero base: the output is the kept delta,
    rescaled. Against mergekit's della_magprune (not its draws: torch's generator): per row of a 2-D
    tensor, and over the whole of a 1-D one, entry j is kept with probability (d - e) + 2e rank_j /
    (n - 1), rank_j its magnitude's ascending position in its row; the kept delta is scaled to the
    whole tensor's L1 norm, or each entry divided by its own probability (the paper's rule)."""
    rng = np.random.default_rng(5)
    d, e = 0.5, 0.2
    ft = {"w": rng.standard_normal((400, 1000)).astype(np.float32), "v": rng.standard_normal(100_000).astype(np.float32)}
    save_file({k: np.zeros_like(v) for k, v in ft.items()}, tmp_path / "b.safetensors")
    save_file(ft, tmp_path / "f.safetensors")
    out = tmp_path / "o.safetensors"
    run("merge", "--method", "della_linear", "--base", tmp_path / "b.safetensors", tmp_path / "f.safetensors", "--weight", "1",
        "--density", str(d), "--param", f"epsilon={e}", "--param", f"rescale={rule}", "--seed", "2", "-o", out, "--quiet")
    got = load_file(out)
    for name, x in ft.items():
        rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
        y = got[name].reshape(rows.shape).astype(np.float64)
        n = rows.shape[1]
        rank = np.argsort(np.argsort(np.abs(rows), axis=1, kind="stable"), axis=1)
        p = (d - e) + 2 * e * rank / (n - 1)
        kept = y != 0
        # the keep rate by tenths of the rank, against the mean probability there (5 sigma)
        for t in range(10):
            sel = (rank >= t * n // 10) & (rank < (t + 1) * n // 10)
            q = p[sel].mean()
            assert abs(kept[sel].mean() - q) < 5 * np.sqrt(q * (1 - q) / sel.sum()), (name, rule, t, kept[sel].mean(), q)
        # each row keeps about d of its entries (5 sigma, summed over rows of the same length)
        assert abs(kept.mean() - d) < 5 * np.sqrt(d * (1 - d) / kept.size), (name, rule)
        if rule == "l1":
            factor = y[kept] / rows[kept]
            assert np.allclose(factor, factor[0], rtol=1e-6), name   # one factor for the tensor
            assert np.abs(y).sum() == pytest.approx(np.abs(rows).sum(), rel=1e-5), name
        else:
            assert np.allclose(y[kept], rows[kept] / p[kept], rtol=1e-6), name


def test_model_listed_twice_counts_twice(tmp_path):
    ft1, ft2 = f"{MK}/models/ft1", f"{MK}/models/ft2"
    out = tmp_path / "o.safetensors"
    run("merge", "--method", "linear", ft1, ft1, ft2, "--weight", "1", "-o", out, "--quiet")
    a, b = load_file(f"{ft1}/model.safetensors"), load_file(f"{ft2}/model.safetensors")
    got = load_file(out)
    for k in a:
        assert np.allclose(got[k], (2 * a[k].astype(np.float64) + b[k]) / 3, rtol=1e-6, atol=1e-7), k


def test_breadcrumbs_small_tensors_are_not_zeroed(tmp_path):
    """mergekit zeroes the whole delta when gamma * numel < 1; wtool keeps int(density * N) entries."""
    base, ft = f"{MK}/models/base", f"{MK}/models/ft1"
    out = tmp_path / "o.safetensors"
    run("merge", "--method", "breadcrumbs", "--base", base, ft, "--weight", "1", "--density", "0.5",
        "--gamma", "0.01", "-o", out, "--quiet")
    got = load_file(out)
    b, f = load_file(f"{base}/model.safetensors"), load_file(f"{ft}/model.safetensors")
    k = "model.norm.weight"   # 32 entries: gamma * N = 0.32 < 1
    d = got[k].astype(np.float64) - b[k]
    assert np.count_nonzero(np.abs(d) > 0) == 16
    # The kept entries are the 16 largest |delta| (top = int(0.01 * 32) = 0 dropped from the top).
    delta = f[k].astype(np.float64) - b[k]
    assert set(np.argsort(-np.abs(delta))[:16]) == set(np.nonzero(d)[0])
