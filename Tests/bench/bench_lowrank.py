#!/usr/bin/env python3
"""`make bench`, lowrank-svd: rank-64 LoRA extraction of every linear layer of a generated
LLaMA-shaped pair (hidden 4096, intermediate 11008, two layers; the fine-tune is the base plus a
decaying-spectrum delta), by wtool randomized, wtool exact, and numpy's full SVD of each delta (what
mergekit-extract-lora does). Prints times, ratios, the measured error of each and peak memory;
never asserts a time. Heavy: the numpy peer takes minutes.
"""
import argparse, json, os, sys, time
import numpy as np
from benchlib import best, bf16_bytes, timed
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wtool", required=True)
    ap.add_argument("--dir", default="/tmp/wtool-bench")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--inter", type=int, default=11008)
    ap.add_argument("--rank", type=int, default=64)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    base, ft = generate(a.dir, a.hidden, a.inter, a.layers)
    results = {}
    for method in ("randomized", "exact"):
        out = os.path.join(a.dir, f"lora-{method}")
        t, rss = timed([a.wtool, "lowrank-svd", "extract", "--base", base, ft, "-o", out, "--rank", str(a.rank), "--svd", method, "--quiet"])
        rep = json.load(open(os.path.join(out, "wtool-report.json")))
        errs = [r["relative_error"] for r in rep["tensors"] if "relative_error" in r]
        results[method] = (t, rss, float(np.mean(errs)))
    tp, rssp = timed([sys.executable, os.path.join(HERE, "numpy_lora.py"), base, ft, str(a.rank)])
    print(f"\nrank-{a.rank} LoRA extraction, {a.layers} LLaMA layers (hidden {a.hidden}, intermediate {a.inter}), {os.cpu_count()} cores:")
    print(f"{'tool':<18} {'seconds':>9} {'vs numpy':>9} {'mean rel. error':>16} {'peak MiB':>9}")
    for method, (t, rss, err) in results.items():
        print(f"{'wtool ' + method:<18} {t:>9.1f} {tp / t:>8.1f}x {err:>16.6f} {rss:>9.0f}")
    print(f"{'numpy full SVD':<18} {tp:>9.1f} {1:>8.1f}x {'(optimal)':>16} {rssp:>9.0f}")
    extra = results["randomized"][2] / results["exact"][2] - 1
    print(f"randomized vs exact error: {extra * 100:+.3f}%; aims: randomized >= 20x numpy at < 1% extra error, exact no slower than numpy")


if __name__ == "__main__":
    main()
