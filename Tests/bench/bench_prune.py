#!/usr/bin/env python3
"""`make bench`, prune-sparse: magnitude 50% (tensor scope), 2:4, wanda 50% (row scope), wanda 2:4,
and DSnoT on both wanda masks, of a generated ~1 GB bf16 checkpoint, by wtool and by a streaming
numpy peer (numpy_prune.py; none for DSnoT), next to the floor of reading the input and writing the
output once. Prints ratios and peak resident memory;
never asserts a time.
"""
import os, sys
import numpy as np
from safetensors.numpy import save_file
from benchlib import standard_args, against_floor, best, cleanup, floor, generate, llama_like_shapes, timed

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    a = standard_args(repeat=3)   # best of 3: on a shared VM a single run can take twice as long
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "bf16.safetensors")
    generate(src, int(a.gb * 1e9))
    stats = os.path.join(a.dir, "acts.safetensors")
    if not os.path.exists(stats):
        rng = np.random.default_rng(3)
        save_file({n[: -len(".weight")] + ".act_sq_sum": (rng.random(s[1]) ** 4 * 100).astype(np.float32)
                   for n, s in llama_like_shapes(int(a.gb * 1e9)).items()}, stats)
    # DSnoT also needs each input channel's mean and variance
    dstats = os.path.join(a.dir, "acts-dsnot.safetensors")
    if not os.path.exists(dstats):
        rng = np.random.default_rng(4)
        t = {}
        for n, s in llama_like_shapes(int(a.gb * 1e9)).items():
            m = n[: -len(".weight")]
            mean, var = (rng.standard_normal(s[1]) * 0.5).astype(np.float32), (rng.random(s[1]) ** 2 * 4 + 0.01).astype(np.float32)
            t[m + ".act_mean"], t[m + ".act_var"] = mean, var
            t[m + ".act_sq_sum"] = ((var + mean * mean) * 128).astype(np.float32)
        save_file(t, dstats)
    out, peer = os.path.join(a.dir, "pruned.safetensors"), os.path.join(a.dir, "peer.safetensors")
    size = os.path.getsize(src)
    jobs = {
        "magnitude 50%": (["--sparsity", "0.5"], ["magnitude", peer, src]),
        "2:4": (["--nm", "2:4"], ["nm", peer, src]),
        "wanda 50%": (["--method", "wanda", "--stats", stats, "--scope", "row"], ["wanda", peer, src, stats]),
        "wanda 2:4": (["--method", "wanda", "--stats", stats, "--nm", "2:4"], ["wanda-nm", peer, src, stats]),
        # no numpy peer: DSnoT is measured against the floor only (aim: within 2x)
        "wanda+DSnoT": (["--method", "wanda", "--stats", dstats, "--scope", "row", "--dsnot"], None),
        "wanda 2:4+DSnoT": (["--method", "wanda", "--stats", dstats, "--nm", "2:4", "--dsnot"], None),
    }
    print(f"\nprune-sparse of a {size / 1e9:.2f} GB bf16 checkpoint ({os.cpu_count()} cores), best of {a.repeat}:")
    print(f"{'job':<16} {'wtool s':>8} {'numpy s':>8} {'floor s':>8} {'vs floor':>9} {'pairs':>9} {'vs numpy':>9} {'wtool MiB':>10} {'numpy MiB':>10}")
    for name, (args, peer_args) in jobs.items():
        t, rss, fl, pairs = against_floor(lambda: timed([a.wtool, "prune-sparse", src, "-o", out, *args, "--quiet"]),
                                          lambda: floor([src], size, os.path.join(a.dir, "floor.bin")), a.repeat, fresh=[out])
        if peer_args is None:
            print(f"{name:<16} {t:>8.2f} {'-':>8} {fl:>8.2f} {t / fl:>8.2f}x {pairs:>8.2f}x {'-':>9} {rss:>10.0f} {'-':>10}")
            cleanup(out)
            continue
        tp, rssp = best(lambda: timed([sys.executable, os.path.join(HERE, "numpy_prune.py"), *peer_args]), a.repeat, fresh=[peer])
        print(f"{name:<16} {t:>8.2f} {tp:>8.2f} {fl:>8.2f} {t / fl:>8.2f}x {pairs:>8.2f}x {tp / t:>8.1f}x {rss:>10.0f} {rssp:>10.0f}")
        cleanup(out, peer)
    print("floor = cat of the input + dd of its size with fsync, measured before each run; vs floor: best over best; pairs: the median")
    print("of each run over the floor measured just before it; aims: within 1.3x of the floor (DSnoT 2x), peak memory under 1 GiB")


if __name__ == "__main__":
    main()
