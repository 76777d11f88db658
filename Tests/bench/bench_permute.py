#!/usr/bin/env python3
"""`make bench`, permute-match: (1) wtool's linear assignment solver against scipy's
linear_sum_assignment at n = 1024, 2048, 4096 on uniform and Gram (weight-matching-like) cost
matrices, timing the solve alone on both sides; (2) a whole weight matching of a planted 4-layer
4096-wide MLP (1024 -> 4096 x 3 -> 1024, B = A with random hidden permutations plus noise of 10%
of the weights' scale) by wtool against the numpy + scipy loop of git-re-basin (f64 costs).
Prints times and ratios; never asserts a time.
"""
import argparse, json, os, subprocess, sys, tempfile, time
import numpy as np
from scipy.optimize import linear_sum_assignment
from safetensors.numpy import load_file, save_file
from benchlib import gemm_rates, timed

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))
import rebasin_reference as ref  # noqa: E402


def bench_lap(wtool, d):
    print("LAP (maximise, f64), solve time only:")
    rng = np.random.default_rng(0)
    for n in (1024, 2048, 4096):
        for kind in ("uniform", "gram"):
            c = rng.random((n, n)) if kind == "uniform" else rng.standard_normal((n, 512)) @ rng.standard_normal((n, 512)).T
            path = os.path.join(d, "lap.safetensors")
            save_file({"c": c}, path)
            ts = []
            for _ in range(2):
                t = time.perf_counter()
                ri, ci = linear_sum_assignment(c, maximize=True)
                ts.append(time.perf_counter() - t)
            ws = []
            for _ in range(2):
                out = subprocess.run([wtool, "permute-match", "--solve-lap", path], capture_output=True, text=True, check=True)
                r = json.loads(out.stdout)
                ws.append(r["seconds"])
            best_ref = c[ri, ci].sum()
            assert abs(r["objective"] - best_ref) <= 1e-9 * abs(best_ref)
            print(f"  n={n:5d} {kind:7s}  scipy {min(ts):7.3f} s   wtool {min(ws):7.3f} s   ratio {min(ts) / min(ws):5.2f}x")


def planted_mlp(d, width=4096, io=1024, layers=4):
    a_path, b_path = os.path.join(d, "pm-a.safetensors"), os.path.join(d, "pm-b.safetensors")
    rng = np.random.default_rng(1)
    dims = [io] + [width] * (layers - 1) + [io]
    a = {}
    for k in range(layers):
        a[f"layers.{k}.weight"] = (rng.standard_normal((dims[k + 1], dims[k]), dtype=np.float32) / np.sqrt(dims[k])).astype(np.float32)
        a[f"layers.{k}.bias"] = (0.1 * rng.standard_normal(dims[k + 1])).astype(np.float32)
    axes = ref.mlp_axes(layers)
    perm = {f"P{k}": rng.permutation(width) for k in range(layers - 1)}
    b = ref.apply_axes(axes, a, perm)
    b = {k: (v + 0.1 * np.std(v) * rng.standard_normal(v.shape)).astype(np.float32) for k, v in b.items()}
    ref.save(a, a_path)
    ref.save(b, b_path)
    return a_path, b_path, a, b, axes


def bench_matching(wtool, d):
    print("whole weight matching, planted MLP 1024-4096x3-1024 (+10% noise):")
    a_path, b_path, a, b, axes = planted_mlp(d)
    out = os.path.join(d, "pm-out.safetensors")
    rep = os.path.join(d, "pm-report.json")
    tw, mem = min((timed([wtool, "permute-match", "--reference", a_path, b_path, "-o", out, "--report", rep, "--quiet"]) for _ in range(2)),
                  key=lambda x: x[0])
    r = json.load(open(rep))
    t0 = time.perf_counter()
    perm, sweeps = ref.weight_matching(axes, a, b, seed=0)
    tn = time.perf_counter() - t0
    aligned = ref.apply_axes(axes, b, perm)
    l2n = np.sqrt(sum(((a[k].astype(np.float64) - aligned[k]) ** 2).sum() for k in a))
    s = r["summary"]
    print(f"  wtool  {tw:7.2f} s  (cost {r['timing']['cost_s']:.2f} s, LAP {r['timing']['lap_s']:.2f} s, {s['sweeps']} sweeps, "
          f"peak {mem:.0f} MiB)  L2 {s['l2_before']:.2f} -> {s['l2_after']:.2f}")
    print(f"  numpy  {tn:7.2f} s  ({sweeps} sweeps)  L2 -> {l2n:.2f}")
    print(f"  ratio  {tn / tw:5.2f}x  (aim >= 3x)")
    # What bounds the ratio: both sides run the same descent's GEMMs, wtool in f32, numpy in f64.
    rates = gemm_rates()
    gf = s["cost_gflop"]
    print(f"  cost GEMMs: {gf:.0f} GFLOP in {r['timing']['cost_s']:.2f} s = {gf / r['timing']['cost_s']:.0f} GF/s; this machine's "
          f"4096^3 GEMM (numpy, all cores): f32 {rates[0]:.0f} GF/s, f64 {rates[1]:.0f} GF/s")
    print(f"  at those rates the GEMMs alone take wtool {gf / rates[0]:.2f} s and numpy about {gf / rates[1]:.2f} s: "
          f"a ratio above {tn / (gf / rates[0]):.2f}x needs fewer flops, not faster ones")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--wtool", required=True)
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        bench_lap(args.wtool, d)
        bench_matching(args.wtool, d)


if __name__ == "__main__":
    main()
