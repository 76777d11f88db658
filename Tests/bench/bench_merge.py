#!/usr/bin/env python3
"""`make bench`, merge: two generated ~1 GB bf16 fine-tunes of a generated base, merged with linear
(the two fine-tunes) and ties (base + both, density 0.5), by wtool and by a streaming numpy peer
(numpy_merge.py), next to the floor of reading the inputs and writing the output once. Prints times,
ratios and peak resident memory; never asserts a time.
"""
import os, sys
from benchlib import standard_args, best, cleanup, floor, generate, timed

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    a = standard_args()
    os.makedirs(a.dir, exist_ok=True)
    base, ft1, ft2 = (os.path.join(a.dir, f"{n}.safetensors") for n in ("bf16", "ft1", "ft2"))
    generate(base, int(a.gb * 1e9))
    generate(ft1, int(a.gb * 1e9), seed=1, base=base)
    generate(ft2, int(a.gb * 1e9), seed=2, base=base)
    out, peer = os.path.join(a.dir, "merged.safetensors"), os.path.join(a.dir, "peer.safetensors")
    size = os.path.getsize(base)
    jobs = {
        "linear": ([ft1, ft2], ["--method", "linear", ft1, ft2, "--weight", "0.5,0.5"], ["linear", peer, ft1, ft2]),
        "ties": ([base, ft1, ft2], ["--method", "ties", "--base", base, ft1, ft2, "--weight", "1", "--density", "0.5"],
                 ["ties", peer, base, ft1, ft2]),
    }
    print(f"\nmerge of {size / 1e9:.2f} GB bf16 checkpoints ({os.cpu_count()} cores), best of {a.repeat}:")
    print(f"{'method':<8} {'wtool s':>8} {'numpy s':>8} {'floor s':>8} {'vs floor':>9} {'vs numpy':>9} {'wtool MiB':>10} {'numpy MiB':>10}")
    for name, (inputs, args, peer_args) in jobs.items():
        t, rss = best(lambda: timed([a.wtool, "merge", *args, "-o", out, "--quiet"]), a.repeat, fresh=[out])
        tp, rssp = best(lambda: timed([sys.executable, os.path.join(HERE, "numpy_merge.py"), *peer_args]), a.repeat, fresh=[peer])
        fl = min(floor(inputs, size, os.path.join(a.dir, "floor.bin")) for _ in range(a.repeat))
        print(f"{name:<8} {t:>8.2f} {tp:>8.2f} {fl:>8.2f} {t / fl:>8.2f}x {tp / t:>8.1f}x {rss:>10.0f} {rssp:>10.0f}")
        cleanup(out, peer)
    print("aims: linear within 1.3x of the floor, ties at least 3x faster than numpy, peak memory under 1 GiB")


if __name__ == "__main__":
    main()
