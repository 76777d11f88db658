#!/usr/bin/env python3
"""`make bench`, quantize: q8_0 and q4_0 (GGUF) and int4 group-128 (compressed-tensors) of a
generated LLaMA-like f32 checkpoint, by wtool and by numpy peers (gguf-py's quantizers, a numpy RTN:
numpy_quantize.py), next to the floor of reading the input and writing the output once. Prints
seconds, MB/s of f32 input, ratios and peak memory; never asserts a time.
"""
import os, sys
import numpy as np
from benchlib import standard_args, best, cleanup, floor, llama_like_shapes, timed
from st_raw import write_raw

HERE = os.path.dirname(os.path.abspath(__file__))


def generate_f32(path, total_bytes):
    if os.path.exists(path) and abs(os.path.getsize(path) - total_bytes) < 0.2 * total_bytes:
        return
    print(f"generating {path} ...", flush=True)
    rng = np.random.default_rng(5)
    tensors = {name: ("F32", list(shape), (rng.standard_normal(shape, dtype=np.float32) * 0.02).tobytes())
               for name, shape in llama_like_shapes(total_bytes, 4).items()}
    write_raw(path, tensors, metadata={"format": "pt"})


def main():
    a = standard_args()
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "f32.safetensors")
    generate_f32(src, int(a.gb * 1e9))
    size = os.path.getsize(src)
    peer = os.path.join(a.dir, "peer.bin")
    jobs = {
        "q8_0": (os.path.join(a.dir, "q.gguf"), ["--scheme", "q8_0"], 34 / 128),
        "q4_0": (os.path.join(a.dir, "q.gguf"), ["--scheme", "q4_0"], 18 / 128),
        "int4-g128": (os.path.join(a.dir, "q-ct"), ["--scheme", "int4", "--group-size", "128"], 0.14),
    }
    print(f"\nquantize of a {size / 1e9:.2f} GB f32 checkpoint ({os.cpu_count()} cores), best of {a.repeat}:")
    print(f"{'scheme':<10} {'floor s':>8} {'wtool s':>8} {'MB/s':>7} {'numpy s':>8} {'vs floor':>9} {'vs numpy':>9} {'wtool MiB':>10} {'numpy MiB':>10}")
    for name, (out, args, ratio) in jobs.items():
        fl = min(floor([src], int(size * ratio), os.path.join(a.dir, "floor.bin")) for _ in range(a.repeat))
        t, rss = best(lambda: timed([a.wtool, "quantize", src, "-o", out, *args, "--quiet"]), a.repeat, fresh=[out])
        peer_scheme = "int4" if name.startswith("int4") else name
        tp, rssp = best(lambda: timed([sys.executable, os.path.join(HERE, "numpy_quantize.py"), peer_scheme, src, peer]), a.repeat, fresh=[peer])
        print(f"{name:<10} {fl:>8.2f} {t:>8.2f} {size / t / 1e6:>7.0f} {tp:>8.2f} {t / fl:>8.2f}x {tp / t:>8.1f}x {rss:>10.0f} {rssp:>10.0f}")
        cleanup(out, peer)
    print("floor = cat of the input + dd of the output's size with fsync; aim: well over 1 GB/s of f32 input per core")


if __name__ == "__main__":
    main()
