#!/usr/bin/env python3
"""`make bench`, lowrank-svd: rank-64 LoRA extraction from a generated LLaMA-shaped pair (hidden
4096, intermediate 11008, two layers; the fine-tune is the base plus a decaying-spectrum delta).
  randomized: every linear layer, wtool --svd randomized against the same algorithm in numpy
              (numpy_lora.py randomized: f32, Gaussian test matrix, 2 power iterations with QR,
              the residual measured as wtool measures it); peak memory against three times the
              largest matrix in f32.
  exact:      one 4096 x 11008 delta, wtool --svd exact (converged subspace iteration) against
              numpy's full SVD truncated (what mergekit-extract-lora does).
Prints times, ratios, the measured error of each and peak memory; never asserts a time. Heavy: the
numpy full SVD takes a minute or more.
"""
import argparse, json, os, sys, time
import numpy as np
from benchlib import best, bf16_bytes, gemm_rates, timed
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Fixtures"))
from st_raw import write_raw  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def shapes(hidden, inter, layers):
    s = {}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q", "k", "v", "o"):
            s[p + f"self_attn.{n}_proj.weight"] = (hidden, hidden)
        s[p + "mlp.gate_proj.weight"] = (inter, hidden)
        s[p + "mlp.up_proj.weight"] = (inter, hidden)
        s[p + "mlp.down_proj.weight"] = (hidden, inter)
    return s


def generate(d, hidden, inter, layers):
    base, ft = os.path.join(d, "lr-base.safetensors"), os.path.join(d, "lr-ft.safetensors")
    if os.path.exists(base) and os.path.exists(ft):
        return base, ft
    print("generating the LLaMA-shaped pair ...", flush=True)
    rng = np.random.default_rng(0)
    tb, tf = {}, {}
    for name, (m, n) in shapes(hidden, inter, layers).items():
        w = rng.standard_normal((m, n), dtype=np.float32) * 0.02
        # a fine-tuning delta with a decaying spectrum, well above bf16's rounding of the weights
        # (so the spectrum is the delta's, not quantisation noise): rank-256 power law plus noise
        k = 256
        u = rng.standard_normal((m, k), dtype=np.float32)
        v = rng.standard_normal((k, n), dtype=np.float32) / np.sqrt(n)
        delta = (u * (0.02 / np.arange(1, k + 1, dtype=np.float32))) @ v + rng.standard_normal((m, n), dtype=np.float32) * 1e-4
        tb[name] = ("BF16", [m, n], bf16_bytes(w))
        tf[name] = ("BF16", [m, n], bf16_bytes(w + delta))
    write_raw(base, tb, metadata={"format": "pt"})
    write_raw(ft, tf, metadata={"format": "pt"})
    return base, ft


def single(d, base, ft, name):
    """A pair holding one tensor of the generated pair (the exact-SVD row)."""
    b1, f1 = os.path.join(d, "lr1-base.safetensors"), os.path.join(d, "lr1-ft.safetensors")
    if not (os.path.exists(b1) and os.path.exists(f1)):
        from benchlib import read_header, read_tensor_bytes
        for src, dst in ((base, b1), (ft, f1)):
            h, _ = read_header(src)
            write_raw(dst, {name: ("BF16", h[name]["shape"], read_tensor_bytes(src, name))}, metadata={"format": "pt"})
    return b1, f1


def wtool_run(a, base, ft, method, tag):
    """Best time and worst peak of a.repeat runs, and the mean relative error wtool reported."""
    out = os.path.join(a.dir, f"lora-{tag}")
    t, rss = best(lambda: timed([a.wtool, "lowrank-svd", "extract", "--base", base, ft, "-o", out, "--rank", str(a.rank),
                                 "--svd", method, "--quiet"]), a.repeat, fresh=(out,))
    rep = json.load(open(os.path.join(out, "wtool-report.json")))
    errs = [r["relative_error"] for r in rep["tensors"] if "relative_error" in r]
    return t, rss, float(np.mean(errs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wtool", required=True)
    ap.add_argument("--dir", default="/tmp/wtool-bench")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=11008)
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    base, ft = generate(a.dir, a.hidden, a.inter, a.layers)
    peer = os.path.join(HERE, "numpy_lora.py")
    print(f"\nrank-{a.rank} LoRA extraction, {os.cpu_count()} cores, best of {a.repeat}:")
    print(f"{'job':<44} {'seconds':>8} {'vs peer':>8} {'mean rel. error':>16} {'peak MiB':>9}")

    # randomized: the same algorithm, every linear layer
    wr = wtool_run(a, base, ft, "randomized", "randomized")
    pr = best(lambda: timed([sys.executable, peer, base, ft, str(a.rank), "randomized"]), a.repeat)
    n = len(shapes(a.hidden, a.inter, a.layers))
    largest = max(m * k for m, k in shapes(a.hidden, a.inter, a.layers).values()) * 4 / 2**20
    print(f"{f'wtool randomized, {n} matrices':<44} {wr[0]:>8.2f} {pr[0] / wr[0]:>7.2f}x {wr[2]:>16.6f} {wr[1]:>9.0f}")
    print(f"{'numpy randomized (same algorithm)':<44} {pr[0]:>8.2f} {1:>7.2f}x {'':>16} {pr[1]:>9.0f}")
    print(f"  peak memory: wtool {wr[1]:.0f} MiB = {wr[1] / largest:.2f}x the largest matrix in f32 ({largest:.0f} MiB); aim <= 3x")
    # What bounds the ratio: both sides make the same products with each delta (the test matrix,
    # two per power iteration, the projection, and the residual's rank-r product).
    l = a.rank + 10
    gf = sum(2 * m * k * (l * (2 + 2 * 2) + a.rank) for m, k in shapes(a.hidden, a.inter, a.layers).values()) / 1e9
    rate = gemm_rates()[0]
    print(f"  products: {gf:.0f} GFLOP; this machine's 4096^3 f32 GEMM (numpy, all cores) {rate:.0f} GF/s: at that rate they alone take "
          f"{gf / rate:.2f} s, so a ratio above {pr[0] / (gf / rate):.2f}x needs fewer flops, not faster ones")

    # exact: one 4096 x 11008 delta
    name = "model.layers.0.mlp.down_proj.weight"
    b1, f1 = single(a.dir, base, ft, name)
    we = wtool_run(a, b1, f1, "exact", "exact")
    pe = best(lambda: timed([sys.executable, peer, b1, f1, str(a.rank), "full"]), 1)
    shape = shapes(a.hidden, a.inter, a.layers)[name]
    print(f"{f'wtool exact, {shape[0]} x {shape[1]}':<44} {we[0]:>8.2f} {pe[0] / we[0]:>7.2f}x {we[2]:>16.6f} {we[1]:>9.0f}")
    print(f"{'numpy full SVD, truncated':<44} {pe[0]:>8.2f} {1:>7.2f}x {'(optimal)':>16} {pe[1]:>9.0f}")
    print("aims: randomized >= 3x the same algorithm in numpy, peak <= 3x the largest matrix; exact >= 3x numpy's full SVD")


if __name__ == "__main__":
    main()
