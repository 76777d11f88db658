#!/usr/bin/env python3
"""`make bench`, checkpoint engine: `wtool convert` of a generated ~1 GB bf16 checkpoint to f32 and
back, next to the floor of reading the input and writing the output once (cat + dd with fsync), with
peak resident memory. Prints ratios; never asserts a time.
"""
import os
from benchlib import standard_args, best, cleanup, floor, generate, timed


def main():
    a = standard_args(repeat=3)
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "bf16.safetensors")
    generate(src, int(a.gb * 1e9))
    f32, back = os.path.join(a.dir, "f32.safetensors"), os.path.join(a.dir, "back.safetensors")
    scratch = os.path.join(a.dir, "floor.bin")
    size = os.path.getsize(src)
    results = {}
    t, rss = best(lambda: timed([a.wtool, "convert", src, "-o", f32, "--dtype", "f32", "--quiet"]), a.repeat, fresh=[f32])
    results["bf16->f32"] = (t, min(floor([src], 2 * size, scratch) for _ in range(a.repeat)), rss)
    t, rss = best(lambda: timed([a.wtool, "convert", f32, "-o", back, "--dtype", "bf16", "--quiet"]), a.repeat, fresh=[back])
    results["f32->bf16"] = (t, min(floor([f32], size, scratch) for _ in range(a.repeat)), rss)
    same = open(src, "rb").read() [-1 << 20:] == open(back, "rb").read()[-1 << 20:]
    print(f"\nwtool convert, {size / 1e9:.2f} GB bf16 checkpoint ({os.cpu_count()} cores), best of {a.repeat}:")
    print(f"{'job':<12} {'wtool s':>9} {'floor s':>9} {'ratio':>7} {'peak RSS MiB':>13}")
    for job, (t, fl, rss) in results.items():
        print(f"{job:<12} {t:>9.3f} {fl:>9.3f} {t / fl:>6.2f}x {rss:>13.0f}")
    print("floor = cat of the input + dd of the output size with fsync; aim: ratio <= 1.5, peak < 1024 MiB")
    print(f"round trip tail bytes identical: {same}")
    cleanup(f32, back)


if __name__ == "__main__":
    main()
