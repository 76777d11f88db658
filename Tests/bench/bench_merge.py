#!/usr/bin/env python3
"""`make bench`, merge: two generated ~1 GB bf16 fine-tunes of a generated base, merged with linear
(the two fine-tunes; with a warm page cache and with the inputs evicted first), ties, dare_ties and
della (base + both, density 0.5), by wtool and, for linear and ties, by a streaming numpy peer
(numpy_merge.py; there is no numpy DARE/DELLA to compare with), next to the floor of reading the
inputs and writing the output once (evicted alike for the cold row). Prints times, ratios and peak
resident memory; never asserts a time.
"""
import os, sys
from benchlib import standard_args, against_floor, best, cleanup, floor, generate, timed

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    a = standard_args(repeat=3)   # best of 3: on a shared VM a single run can take twice as long
    os.makedirs(a.dir, exist_ok=True)
    base, ft1, ft2 = (os.path.join(a.dir, f"{n}.safetensors") for n in ("bf16", "ft1", "ft2"))
    generate(base, int(a.gb * 1e9))
    generate(ft1, int(a.gb * 1e9), seed=1, base=base)
    generate(ft2, int(a.gb * 1e9), seed=2, base=base)
    out, peer = os.path.join(a.dir, "merged.safetensors"), os.path.join(a.dir, "peer.safetensors")
    size = os.path.getsize(base)
    three = ["--base", base, ft1, ft2, "--weight", "1", "--density", "0.5"]
    jobs = {
        "linear": ([ft1, ft2], ["--method", "linear", ft1, ft2, "--weight", "0.5,0.5"], ["linear", peer, ft1, ft2]),
        "linear-cold": ([ft1, ft2], ["--method", "linear", ft1, ft2, "--weight", "0.5,0.5"], ["linear", peer, ft1, ft2]),
        "ties": ([base, ft1, ft2], ["--method", "ties", *three], ["ties", peer, base, ft1, ft2]),
        "dare_ties": ([base, ft1, ft2], ["--method", "dare_ties", *three, "--seed", "1"], None),
        "della": ([base, ft1, ft2], ["--method", "della", *three, "--epsilon", "0.1", "--seed", "1"], None),
    }
    print(f"\nmerge of {size / 1e9:.2f} GB bf16 checkpoints ({os.cpu_count()} cores), best of {a.repeat}:")
    print(f"{'method':<12} {'wtool s':>8} {'numpy s':>8} {'floor s':>8} {'vs floor':>9} {'pairs':>9} {'vs numpy':>9} {'wtool MiB':>10} {'numpy MiB':>10}")
    for name, (inputs, args, peer_args) in jobs.items():
        cold = name.endswith("-cold")
        def run(cmd):
            if cold:
                evict(inputs)
            return timed(cmd)
        t, rss, fl, pairs = against_floor(lambda: run([a.wtool, "merge", *args, "-o", out, "--quiet"]),
                                          lambda: floor(inputs, size, os.path.join(a.dir, "floor.bin"), before=(lambda: evict(inputs)) if cold else None),
                                          a.repeat, fresh=[out])
        if peer_args:
            tp, rssp = best(lambda: run([sys.executable, os.path.join(HERE, "numpy_merge.py"), *peer_args]), a.repeat, fresh=[peer])
        vs_peer = f"{tp / t:>8.1f}x" if peer_args else f"{'-':>9}"
        peer_cols = f"{tp:>8.2f}" if peer_args else f"{'-':>8}"
        peer_mem = f"{rssp:>10.0f}" if peer_args else f"{'-':>10}"
        print(f"{name:<12} {t:>8.2f} {peer_cols} {fl:>8.2f} {t / fl:>8.2f}x {pairs:>8.2f}x {vs_peer} {rss:>10.0f} {peer_mem}")
        cleanup(out, peer)
    print("vs floor: best over best; pairs: the median of each run over the floor measured just before it")
    print("aims: linear within 1.3x of the floor (warm and cold), ties, dare_ties and della within 2.5x, peak memory under 1 GiB")


def evict(paths):
    """Drops the files' pages from the page cache (posix_fadvise DONTNEED: no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


if __name__ == "__main__":
    main()
