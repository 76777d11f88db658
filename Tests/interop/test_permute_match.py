"""wtool permute-match against independent references: scipy's linear_sum_assignment, a numpy +
scipy weight matching (git-re-basin's loop), numpy forward passes of the digits MLPs and of a tiny
LLaMA, and the digits experiment of the permute-match notes (§6)."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from scipy.optimize import linear_sum_assignment

from conftest import FIX, run
import rebasin_reference as ref

DIG = os.path.join(FIX, "permute")
A, B = os.path.join(DIG, "a.safetensors"), os.path.join(DIG, "b.safetensors")


def digits():
    d = load_file(os.path.join(DIG, "digits.safetensors"))
    x = d["x"].astype(np.float64) / 16
    return x[d["test"]], d["y"][d["test"]].astype(np.int64)


def loss_acc(p, x, y):
    z = ref.mlp_logits(p, x)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(y)), y].mean(), (z.argmax(axis=1) == y).mean()


def barrier(a, b, x, y):
    """max over the 11-point path of L(alpha) minus the straight line between the endpoints."""
    la, lb = loss_acc(a, x, y)[0], loss_acc(b, x, y)[0]
    worst = 0.0
    for alpha in np.linspace(0, 1, 11):
        mid = {k: (1 - alpha) * np.asarray(a[k], np.float64) + alpha * np.asarray(b[k], np.float64) for k in a}
        worst = max(worst, loss_acc(mid, x, y)[0] - ((1 - alpha) * la + alpha * lb))
    return worst


@pytest.fixture(scope="module")
def digits_match(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits")
    out, perm, rep = d / "b_aligned.safetensors", d / "p.json", d / "r.json"
    run("permute-match", "--reference", A, B, "-o", out, "--seed", 0, "--perm-out", perm, "--report", rep, "--verify")
    return load_file(out), json.load(open(perm)), json.load(open(rep))


# ---------------------------------------------------------------- LAP

def test_lap_exact_against_scipy_on_thousands_of_cases(tmp_path):
    rng = np.random.default_rng(7)
    mats = {}
    for k in range(3000):
        n = int(rng.integers(1, 48)) if k >= 6 else 1
        kind = k % 7
        if kind == 0:
            c = rng.random((n, n))
        elif kind == 1:  # heavy ties
            c = rng.integers(0, 3, (n, n)).astype(np.float64)
        elif kind == 2:  # constant rows
            c = np.repeat(rng.normal(size=(n, 1)), n, axis=1)
        elif kind == 3:  # constant matrix
            c = np.full((n, n), -1.5)
        elif kind == 4:  # wide range
            c = rng.normal(size=(n, n)) * 10.0 ** rng.integers(-8, 8)
        elif kind == 5:  # a Gram matrix, as weight matching builds
            c = rng.normal(size=(n, 8)) @ rng.normal(size=(n, 8)).T
        else:  # near-permutation (a planted answer plus noise)
            c = np.eye(n)[rng.permutation(n)] + 0.01 * rng.random((n, n))
        mats[f"c{k}"] = np.ascontiguousarray(c)
    # sizes past the row reductions, where the shortest-path passes (AVX2) do the work
    for k, n in enumerate((97, 256, 401)):
        mats[f"big-uniform{k}"] = rng.random((n, n))
        mats[f"big-ties{k}"] = rng.integers(0, 3, (n, n)).astype(np.float64)
        mats[f"big-gram{k}"] = rng.normal(size=(n, 6)) @ rng.normal(size=(n, 6)).T
    path = tmp_path / "lap.safetensors"
    save_file(mats, path)
    _, out, _ = run("permute-match", "--solve-lap", path)
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == len(mats)
    for r in rows:
        c = mats[r["name"]]
        n = c.shape[0]
        a = np.array(r["assignment"])
        assert sorted(a.tolist()) == list(range(n)), r["name"]
        ri, ci = linear_sum_assignment(c, maximize=True)
        best = c[ri, ci].sum()
        got = c[np.arange(n), a].sum()
        assert abs(got - best) <= 1e-12 * max(1.0, np.abs(c).sum()), (r["name"], got, best)
        assert r["objective"] == pytest.approx(got, rel=1e-12, abs=1e-300)
    # a constant matrix keeps the identity (no unit moves on a tie)
    const = [r for r in rows if r["name"] in {f"c{k}" for k in range(3000) if k % 7 == 3}]
    assert all(r["assignment"] == list(range(r["n"])) for r in const)


def test_lap_rejects_non_finite(tmp_path):
    c = np.ones((3, 3))
    c[1, 2] = np.nan
    save_file({"c": c}, tmp_path / "bad.safetensors")
    code, _, err = run("permute-match", "--solve-lap", tmp_path / "bad.safetensors", check=False)
    assert code == 1 and "'c'" in err and "NaN" in err
    # finite but so large that the solver's sums would overflow: refused as well, naming the entry
    c = np.ones((3, 3))
    c[2, 1] = -2e300
    save_file({"big": c}, tmp_path / "big.safetensors")
    code, _, err = run("permute-match", "--solve-lap", tmp_path / "big.safetensors", check=False)
    assert code == 1 and "'big'" in err and "above 1e300" in err and "(2, 1)" in err


# ---------------------------------------------------------------- digits experiment

def test_digits_output_is_an_exact_reindexing_of_b(digits_match):
    out, perm, _ = digits_match
    b = load_file(B)
    p0, p1 = np.array(perm["permutations"]["layers.0"]), np.array(perm["permutations"]["layers.1"])
    assert set(out) == set(b)
    assert all(out[k].dtype == b[k].dtype and out[k].shape == b[k].shape for k in b)
    assert np.array_equal(out["layers.0.weight"], b["layers.0.weight"][p0])
    assert np.array_equal(out["layers.0.bias"], b["layers.0.bias"][p0])
    assert np.array_equal(out["layers.1.weight"], b["layers.1.weight"][p1][:, p0])
    assert np.array_equal(out["layers.1.bias"], b["layers.1.bias"][p1])
    assert np.array_equal(out["layers.2.weight"], b["layers.2.weight"][:, p1])
    assert np.array_equal(out["layers.2.bias"], b["layers.2.bias"])


def test_digits_logits_unchanged(digits_match):
    out, _, rep = digits_match
    x, _ = digits()
    b = load_file(B)
    # f64 forward of the stored f32 weights: a re-indexing leaves only summation-order rounding
    assert np.abs(ref.mlp_logits(out, x) - ref.mlp_logits(b, x)).max() <= 1e-5
    assert rep["summary"]["verify_max_abs_logit_difference"] <= 1e-4


def test_digits_distance_matches_scipy_weight_matching(digits_match):
    out, _, rep = digits_match
    a, b = load_file(A), load_file(B)
    axes = ref.mlp_axes(3)
    perm, _ = ref.weight_matching(axes, a, b, seed=0)
    aligned = ref.apply_axes(axes, b, perm)
    def l2(x, y):
        return np.sqrt(sum(((np.asarray(x[k], np.float64) - np.asarray(y[k], np.float64)) ** 2).sum() for k in x))
    naive, judge, ours = l2(a, b), l2(a, aligned), l2(a, out)
    assert ours <= judge * 1.005, (ours, judge)
    assert ours < 0.8 * naive
    s = rep["summary"]
    assert s["l2_before"] == pytest.approx(naive, rel=1e-6)
    assert s["l2_after"] == pytest.approx(ours, rel=1e-6)
    obj = sum((np.asarray(a[k], np.float64) * np.asarray(out[k], np.float64)).sum() for k in a)
    assert s["objective_after"] == pytest.approx(obj, rel=1e-9)
    assert s["objective_after"] > s["objective_before"]


def test_digits_result_is_a_coordinate_descent_fixed_point(digits_match):
    out, _, _ = digits_match
    a = load_file(A)
    axes = ref.mlp_axes(3)
    for p, n in (("P0", 128), ("P1", 128)):
        cost = np.zeros((n, n))
        for t, ax in axes.items():
            for k, q in enumerate(ax):
                if q == p:
                    cost += np.moveaxis(np.asarray(a[t], np.float64), k, 0).reshape(n, -1) @ \
                        np.moveaxis(np.asarray(out[t], np.float64), k, 0).reshape(n, -1).T
        ri, ci = linear_sum_assignment(cost, maximize=True)
        now = np.trace(cost)
        assert cost[ri, ci].sum() - now <= 1e-9 * abs(now)


def test_digits_midpoint_accuracy_and_loss_barrier(digits_match):
    out, _, _ = digits_match
    x, y = digits()
    a, b = load_file(A), load_file(B)
    mid = {k: 0.5 * (np.asarray(a[k], np.float64) + np.asarray(out[k], np.float64)) for k in a}
    naive_mid = {k: 0.5 * (np.asarray(a[k], np.float64) + np.asarray(b[k], np.float64)) for k in a}
    loss, acc = loss_acc(mid, x, y)
    naive_loss, naive_acc = loss_acc(naive_mid, x, y)
    assert acc >= 0.95 and loss <= 0.15, (acc, loss)
    assert naive_loss > loss and naive_acc < acc
    aligned_barrier, naive_barrier = barrier(a, out, x, y), barrier(a, b, x, y)
    assert aligned_barrier <= 0.05, aligned_barrier
    assert naive_barrier > 3 * aligned_barrier


def test_digits_report(digits_match):
    _, _, rep = digits_match
    s = rep["summary"]
    assert s["architecture"] == "mlp" and s["converged"] and s["sweeps"] >= 2
    spaces = {r["name"]: r for r in s["space_details"]}
    assert set(spaces) == {"layers.0", "layers.1"}
    for r in spaces.values():
        assert r["size"] == 128 and r["steps"] >= 1 and len(r["gains"]) == len(r["skipped"])
        assert all(g >= 0 for g in r["gains"]) and sum(r["gains"]) > 0
        assert 0.5 < r["moved_fraction"] <= 1.0
    assert rep["timing"]["cost_s"] >= 0 and rep["timing"]["lap_s"] >= 0
    assert [t["permuted"] for t in rep["tensors"]].count(True) == 5
    # The input layer's term (128 x 64: it reads no other permutation) is computed at the first
    # visit of layers.0 and reused at the others; every other term is computed at every visit.
    runs = {k: sum(not x for x in r["skipped"]) for k, r in spaces.items()}
    assert runs["layers.0"] >= 2
    assert s["cost_terms_reused"] == runs["layers.0"] - 1
    n = 128
    per_visit0 = 2 * n * n * (1 + 128)   # bias, layers.1's columns
    per_visit1 = 2 * n * n * (128 + 1 + 10)   # layers.1's rows, bias, layers.2's columns
    flops = 2 * n * n * 64 + runs["layers.0"] * per_visit0 + runs["layers.1"] * per_visit1
    assert s["cost_gflop"] == pytest.approx(flops / 1e9, rel=1e-12)


def test_digits_planted_permutation_recovered_bit_for_bit(tmp_path):
    a = load_file(A)
    rng = np.random.default_rng(11)
    axes = ref.mlp_axes(3)
    c = ref.apply_axes(axes, a, {"P0": rng.permutation(128), "P1": rng.permutation(128)})
    ref.save(c, tmp_path / "c.safetensors")
    run("permute-match", "--reference", A, tmp_path / "c.safetensors", "-o", tmp_path / "back.safetensors")
    back = load_file(tmp_path / "back.safetensors")
    assert all(np.array_equal(back[k], a[k]) for k in a)


def test_self_test_mlp(tmp_path):
    _, _, err = run("permute-match", "--self-test", A, "--seed", 3, "--report", tmp_path / "s.json")
    s = json.load(open(tmp_path / "s.json"))["summary"]
    assert s["recovered"] and s["tensors_equal"] == s["tensors"] == 6 and "recovered bit for bit" in err


def test_apply_reproduces_the_match_and_carries_to_a_fine_tune(tmp_path, digits_match):
    out, perm, _ = digits_match
    pj = tmp_path / "p.json"
    json.dump(perm, open(pj, "w"))
    run("permute-match", "--apply", pj, B, "-o", tmp_path / "again.safetensors")
    again = load_file(tmp_path / "again.safetensors")
    assert all(np.array_equal(again[k], out[k]) for k in out)
    b = load_file(B)
    ft = {k: v + np.float32(0.01) * np.random.default_rng(1).normal(size=v.shape).astype(np.float32) for k, v in b.items()}
    save_file(ft, tmp_path / "ft.safetensors")
    run("permute-match", "--apply", pj, tmp_path / "ft.safetensors", "-o", tmp_path / "ft_aligned.safetensors")
    got = load_file(tmp_path / "ft_aligned.safetensors")
    p0, p1 = np.array(perm["permutations"]["layers.0"]), np.array(perm["permutations"]["layers.1"])
    assert np.array_equal(got["layers.1.weight"], ft["layers.1.weight"][p1][:, p0])


def test_deterministic_across_threads(tmp_path):
    for t in (1, 2):
        run("permute-match", "--reference", A, B, "-o", tmp_path / f"t{t}.safetensors", "--threads", t, "--seed", 5)
    assert open(tmp_path / "t1.safetensors", "rb").read() == open(tmp_path / "t2.safetensors", "rb").read()


# ---------------------------------------------------------------- tiny LLaMA (GQA, untied lm_head)

def test_llama_planted_permutation_recovered_bit_for_bit(tmp_path):
    a = ref.llama_params(0)
    for seed in range(4):
        ref.save_llama(tmp_path / "a", a)
        b = ref.llama_permute(a, seed)
        ref.save_llama(tmp_path / f"b{seed}", b)
        tokens = np.arange(12) * 3 % 50
        assert np.abs(ref.llama_logits(b, tokens) - ref.llama_logits(a, tokens)).max() < 1e-9
        rep = tmp_path / f"r{seed}.json"
        run("permute-match", "--reference", tmp_path / "a", tmp_path / f"b{seed}", "-o", tmp_path / f"out{seed}", "--seed", seed,
            "--report", rep)
        # the residual space's embedding term reads no other permutation: kept after its first visit
        assert json.load(open(rep))["summary"]["cost_terms_reused"] > 0
        out = load_file(tmp_path / f"out{seed}" / "model.safetensors")
        assert set(out) == set(a)
        for k in a:
            assert np.array_equal(out[k], a[k]), (seed, k)
        assert os.path.exists(tmp_path / f"out{seed}" / "config.json")


def test_llama_independent_pair_keeps_b_logits(tmp_path):
    a, b = ref.llama_params(1), ref.llama_params(2)
    ref.save_llama(tmp_path / "a", a)
    ref.save_llama(tmp_path / "b", b)
    run("permute-match", "--reference", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out", "--report", tmp_path / "r.json")
    out = load_file(tmp_path / "out" / "model.safetensors")
    tokens = np.array([3, 17, 5, 42, 8, 0, 49, 21, 13, 7])
    diff = np.abs(ref.llama_logits(out, tokens) - ref.llama_logits(b, tokens)).max()
    assert diff <= 1e-5
    moved = [k for k in b if not np.array_equal(out[k], b[k])]
    assert "model.embed_tokens.weight" in moved and "lm_head.weight" in moved
    s = json.load(open(tmp_path / "r.json"))["summary"]
    assert s["l2_after"] < s["l2_before"]
    names = {r["name"] for r in s["space_details"]}
    assert {"res", "layers.0.mlp", "layers.0.kv", "layers.0.qgrp.0", "layers.0.qgrp.1", "layers.1.vdim.1"} <= names


def test_llama_self_test_and_spec(tmp_path):
    ref.save_llama(tmp_path / "m", ref.llama_params(3))
    run("permute-match", "--self-test", tmp_path / "m", "--seed", 1)
    _, out, _ = run("permute-match", "--print-spec", tmp_path / "m")
    spec = json.loads(out)
    assert spec["architecture"] == "llama"
    t = spec["tensors"]
    assert t["model.layers.0.self_attn.q_proj.weight"] == [["layers.0.kv", "layers.0.qgrp.{0}", 8], "res"]
    assert t["model.layers.0.self_attn.k_proj.weight"] == [["layers.0.kv", 8], "res"]
    assert t["model.layers.0.self_attn.o_proj.weight"] == ["res", ["layers.0.kv", "layers.0.qgrp.{0}", "layers.0.vdim.{0}"]]
    assert t["model.embed_tokens.weight"] == [None, "res"] and t["lm_head.weight"] == [None, "res"]
    assert t["model.norm.weight"] == ["res"]


def test_llama_spec_file_round_trip_gives_the_same_output(tmp_path):
    ref.save_llama(tmp_path / "a", ref.llama_params(4))
    ref.save_llama(tmp_path / "b", ref.llama_params(5))
    _, out, _ = run("permute-match", "--print-spec", tmp_path / "b")
    (tmp_path / "spec.json").write_text(out)
    run("permute-match", "--reference", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "o1")
    run("permute-match", "--reference", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "o2", "--spec", tmp_path / "spec.json")
    o1, o2 = load_file(tmp_path / "o1" / "model.safetensors"), load_file(tmp_path / "o2" / "model.safetensors")
    assert all(np.array_equal(o1[k], o2[k]) for k in o1)


def spec_variant(tmp_path, folder, edit):
    _, out, _ = run("permute-match", "--print-spec", folder)
    spec = json.loads(out)
    edit(spec)
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize("case,edit,message", [
    ("qk dims under RoPE", lambda s: s["tensors"].update({
        "model.layers.0.self_attn.q_proj.weight": [["layers.0.kv", "layers.0.qgrp.{0}", "layers.0.vdim.{0}"], "res"]}),
     "must stay in place in a llama model: RoPE"),
    ("residual without norms", lambda s: s["tensors"].update({"model.norm.weight": [None]}), "must move with"),
    ("heads across kv groups", lambda s: (s["spaces"].update({"allq": 4}), s["tensors"].update({
        "model.layers.1.self_attn.q_proj.weight": [["allq", 8], "res"],
        "model.layers.1.self_attn.o_proj.weight": ["res", ["allq", 8]]})), "must"),
])
def test_llama_invalid_spec_files_refused(tmp_path, case, edit, message):
    ref.save_llama(tmp_path / "a", ref.llama_params(6))
    ref.save_llama(tmp_path / "b", ref.llama_params(7))
    spec = spec_variant(tmp_path, tmp_path / "b", edit)
    code, _, err = run("permute-match", "--reference", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out", "--spec", spec, check=False)
    assert code == 1, case
    assert message in err and "variant.json" in err, err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "out")


def test_numpy_checker_agrees_these_permutations_are_invalid():
    """The invalid cases refused above really break the model (numpy forward pass)."""
    a = ref.llama_params(8)
    tokens = np.arange(10) * 7 % 50
    base = ref.llama_logits(a, tokens)
    assert np.abs(ref.llama_logits(ref.llama_permute(a, 1, qk_dims=True), tokens) - base).max() > 1e-2
    assert np.abs(ref.llama_logits(ref.llama_permute(a, 1, skip_norms=True), tokens) - base).max() > 1e-2


# ---------------------------------------------------------------- spec files and errors

def write_spec(path, spec):
    path.write_text(json.dumps(spec))
    return path


MLP_SPEC = {"spaces": {"h0": 128, "h1": 128}, "tensors": {
    "layers.0.weight": ["h0", None], "layers.0.bias": ["h0"], "layers.1.weight": ["h1", "h0"],
    "layers.1.bias": ["h1"], "layers.2.weight": [None, "h1"], "layers.2.bias": [None]}}


def test_yaml_spec_file_equals_inferred(tmp_path):
    lines = ["spaces:", "  h0: 128", "  h1: 128", "tensors:"]
    for k, v in MLP_SPEC["tensors"].items():
        lines.append(f"  {k}: [{', '.join('null' if x is None else x for x in v)}]")
    (tmp_path / "s.yaml").write_text("\n".join(lines) + "\n")
    run("permute-match", "--reference", A, B, "-o", tmp_path / "y.safetensors", "--spec", tmp_path / "s.yaml")
    run("permute-match", "--reference", A, B, "-o", tmp_path / "i.safetensors")
    y, i = load_file(tmp_path / "y.safetensors"), load_file(tmp_path / "i.safetensors")
    assert all(np.array_equal(y[k], i[k]) for k in y)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s["tensors"].pop("layers.2.bias"), "'layers.2.bias': is not covered by the spec"),
    (lambda s: s["spaces"].update({"h1": 64}), "axis 0 has length 128 but the spec's levels make 64"),
    (lambda s: s["tensors"].update({"layers.1.bias": ["h9"]}), "uses space 'h9', which \"spaces\" does not declare"),
    (lambda s: s["tensors"].update({"layers.1.weight": ["h1"]}), "the spec gives 1 axes"),
    (lambda s: s["tensors"].update({"layers.9.weight": [None]}), "does not hold it"),
    (lambda s: s["tensors"].update({"layers.1.bias": [None]}), "must move with"),
    (lambda s: s.update({"bogus": 1}), "unknown key 'bogus'"),
])
def test_invalid_spec_files_refused(tmp_path, edit, message):
    spec = json.loads(json.dumps(MLP_SPEC))
    edit(spec)
    path = write_spec(tmp_path / "bad.json", spec)
    code, _, err = run("permute-match", "--reference", A, B, "-o", tmp_path / "out.safetensors", "--spec", path, check=False)
    assert code == 1 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "out.safetensors")


def test_bad_inputs(tmp_path):
    b = load_file(B)
    shapes = dict(b)
    shapes["layers.2.bias"] = np.zeros(11, np.float32)
    save_file(shapes, tmp_path / "shape.safetensors")
    code, _, err = run("permute-match", "--reference", A, tmp_path / "shape.safetensors", "-o", tmp_path / "o.safetensors", check=False)
    assert code == 1 and "'layers.2.bias'" in err and "shape" in err
    nan = dict(b)
    nan["layers.1.weight"] = nan["layers.1.weight"].copy()
    nan["layers.1.weight"][3, 4] = np.nan
    save_file(nan, tmp_path / "nan.safetensors")
    code, _, err = run("permute-match", "--reference", A, tmp_path / "nan.safetensors", "-o", tmp_path / "o.safetensors", check=False)
    assert code == 1 and "'layers.1.weight'" in err and "NaN" in err
    save_file({"emb": np.zeros((4, 4), np.float32), "x.weight": np.zeros((4, 4), np.float32)}, tmp_path / "odd.safetensors")
    code, _, err = run("permute-match", "--reference", tmp_path / "odd.safetensors", tmp_path / "odd.safetensors", "-o", tmp_path / "o.safetensors", check=False)
    assert code == 1 and "--spec FILE" in err
    assert not os.path.exists(tmp_path / "o.safetensors")
    (tmp_path / "p.json").write_text('{"format": "something else"}')
    code, _, err = run("permute-match", "--apply", tmp_path / "p.json", B, "-o", tmp_path / "o.safetensors", check=False)
    assert code == 1 and "not a permutation file" in err


@pytest.mark.parametrize("args", [
    ["B", "-o", "OUT"],                                   # no reference
    ["--reference", "A", "B"],                            # no output
    ["--reference", "A", "B", "-o", "OUT", "--include", "x*"],
    ["--reference", "A", "B", "-o", "OUT", "--max-sweeps", "0"],
    ["--apply", "P", "--reference", "A", "B", "-o", "OUT"],
    ["--print-spec", "B", "-o", "OUT"],
])
def test_usage_errors(tmp_path, args):
    args = [{"A": A, "B": B, "OUT": str(tmp_path / "o.safetensors"), "P": str(tmp_path / "p.json")}.get(x, x) for x in args]
    code, _, _ = run("permute-match", *args, check=False)
    assert code == 2
    assert not os.path.exists(tmp_path / "o.safetensors")


def test_verify_is_for_mlp_chains(tmp_path):
    ref.save_llama(tmp_path / "a", ref.llama_params(9))
    code, _, err = run("permute-match", "--reference", tmp_path / "a", tmp_path / "a", "-o", tmp_path / "o", "--verify", check=False)
    assert code == 2 and "--self-test" in err


# ---------------------------------------------------------------- GPT-2 and BERT built-ins

def test_gpt2_independent_pair_keeps_b_logits_and_self_test(tmp_path):
    a, b = ref.gpt2_params(1), ref.gpt2_params(2)
    ref.save_gpt2(tmp_path / "a", a)
    ref.save_gpt2(tmp_path / "b", b)
    run("permute-match", "--reference", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out", "--report", tmp_path / "r.json")
    out = load_file(tmp_path / "out" / "model.safetensors")
    tokens = np.array([1, 7, 29, 3, 12, 0, 5, 18])
    assert np.abs(ref.gpt2_logits(out, tokens) - ref.gpt2_logits(b, tokens)).max() <= 1e-5
    assert not np.array_equal(out["h.0.attn.c_attn.weight"], b["h.0.attn.c_attn.weight"])
    s = json.load(open(tmp_path / "r.json"))["summary"]
    assert s["architecture"] == "gpt2" and s["l2_after"] < s["l2_before"]
    wide = dict(ref.GPT2, d=64, inner=256)
    ref.save_gpt2(tmp_path / "w", ref.gpt2_params(3, wide), wide)
    run("permute-match", "--self-test", tmp_path / "w", "--seed", 2)
    _, spec, _ = run("permute-match", "--print-spec", tmp_path / "a")
    fused = json.loads(spec)["tensors"]["h.0.attn.c_attn.weight"]
    assert fused == ["res", {"concat": [["h.0.head", 4], ["h.0.head", 4], ["h.0.head", "h.0.vdim.{0}"]]}]


def test_bert_self_test_and_spec(tmp_path):
    ref.save_bert(tmp_path / "m", 3)
    run("permute-match", "--self-test", tmp_path / "m", "--seed", 4, "--report", tmp_path / "s.json")
    s = json.load(open(tmp_path / "s.json"))["summary"]
    assert s["recovered"] and s["architecture"] == "bert"
    _, spec, _ = run("permute-match", "--print-spec", tmp_path / "m")
    t = json.loads(spec)["tensors"]
    assert t["cls.predictions.transform.dense.weight"] == ["res", "res"]
    assert t["bert.encoder.layer.1.attention.self.value.weight"] == [["layer.1.head", "layer.1.vdim.{0}"], "res"]
    assert t["bert.encoder.layer.1.attention.self.key.weight"] == [["layer.1.head", 4], "res"]
    assert t["cls.seq_relationship.weight"] == [None, "pooler"]


def test_apply_refuses_permutations_that_do_not_fit_the_spec(tmp_path, digits_match):
    _, perm, _ = digits_match
    for edit, message in ((lambda p: p["permutations"].update({"nope": [0, 1]}), "names no space of the spec"),
                          (lambda p: p["permutations"].update({"layers.0": [1, 0]}), "has 2 entries, the space has 128"),
                          (lambda p: p["permutations"].update({"layers.0": [0, 0] + list(range(2, 128))}), "is not a permutation")):
        bad = json.loads(json.dumps(perm))
        edit(bad)
        (tmp_path / "p.json").write_text(json.dumps(bad))
        code, _, err = run("permute-match", "--apply", tmp_path / "p.json", B, "-o", tmp_path / "o.safetensors", check=False)
        assert code == 1 and message in err, err
        assert not os.path.exists(tmp_path / "o.safetensors")
