#!/usr/bin/env python3
"""`make bench` for the checkpoint engine: `wtool convert` of a generated ~1 GB bf16 checkpoint to
f32 and back, next to the floor of reading the inputs and writing the outputs once (cat + dd with
fsync, as wtool fsyncs), with peak resident memory. Prints ratios; never asserts a time.
"""
import argparse, json, os, resource, shutil, subprocess, sys, time
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Fixtures"))
from st_raw import write_raw  # noqa: E402


def generate(path, total_bytes, seed=0):
    """A LLaMA-like bf16 checkpoint of about total_bytes: square and MLP-shaped matrices."""
    rng = np.random.default_rng(seed)
    shapes, size, i = {}, 0, 0
    while size < total_bytes:
        layer = i // 4
        kind = ["self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"][i % 4]
        shape = (2048, 2048) if "attn" in kind else ((5632, 2048) if "up" in kind else (2048, 5632))
        shapes[f"model.layers.{layer}.{kind}.weight"] = shape
        size += shape[0] * shape[1] * 2
        i += 1
    tensors = {}
    for name, shape in shapes.items():
        x = (rng.standard_normal(shape, dtype=np.float32) * 0.02).view(np.uint32)
        tensors[name] = ("BF16", list(shape), (x >> 16).astype(np.uint16).tobytes())
    write_raw(path, tensors, metadata={"format": "pt"})


def timed(cmd):
    """Wall time and peak RSS (MiB) of one command, measured in a fresh helper process."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    out = subprocess.run([sys.executable, "-c", probe, *map(str, cmd)], capture_output=True, text=True, check=True)
    secs, rss_kb, rc = out.stdout.split()
    if int(rc) != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    return float(secs), int(rss_kb) / 1024


def floor(inputs, out_bytes, out_path):
    """Read every input once and write out_bytes once, fsynced."""
    t_read, _ = timed(["sh", "-c", "cat \"$@\" > /dev/null", "sh", *inputs])
    mib = max(1, out_bytes // (1 << 20))
    t_write, _ = timed(["dd", "if=/dev/zero", f"of={out_path}", "bs=1M", f"count={mib}", "conv=fsync", "status=none"])
    os.unlink(out_path)
    return t_read + t_write


def best(f, n=3):
    runs = [f() for _ in range(n)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wtool", required=True)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--dir", default="/tmp/wtool-bench")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "bf16.safetensors")
    if not os.path.exists(src) or abs(os.path.getsize(src) - a.gb * 1e9) > 0.2e9:
        print(f"generating {a.gb} GB bf16 checkpoint in {a.dir} ...", flush=True)
        generate(src, int(a.gb * 1e9))
    f32 = os.path.join(a.dir, "f32.safetensors")
    back = os.path.join(a.dir, "back.safetensors")
    size = os.path.getsize(src)
    results = {}

    t, rss = best(lambda: timed([a.wtool, "convert", src, "-o", f32, "--dtype", "f32", "--quiet"]), a.repeat)
    fl = min(floor([src], 2 * size, os.path.join(a.dir, "floor.bin")) for _ in range(a.repeat))
    results["bf16->f32"] = (t, fl, rss)
    t, rss = best(lambda: timed([a.wtool, "convert", f32, "-o", back, "--dtype", "bf16", "--quiet"]), a.repeat)
    fl = min(floor([f32], size, os.path.join(a.dir, "floor.bin")) for _ in range(a.repeat))
    results["f32->bf16"] = (t, fl, rss)
    same = open(src, "rb").read()[-1 << 20:] == open(back, "rb").read()[-1 << 20:]

    print(f"\nwtool convert, {size / 1e9:.2f} GB bf16 checkpoint ({os.cpu_count()} cores), best of {a.repeat}:")
    print(f"{'job':<12} {'wtool s':>9} {'floor s':>9} {'ratio':>7} {'peak RSS MiB':>13}")
    for job, (t, fl, rss) in results.items():
        print(f"{job:<12} {t:>9.3f} {fl:>9.3f} {t / fl:>6.2f}x {rss:>13.0f}")
    print("floor = cat of the input + dd of the output size with fsync; aim: ratio <= 1.5, peak < 1024 MiB")
    print(f"round trip tail bytes identical: {same}")
    for p in (f32, back):
        os.unlink(p)
        report = p[:-len('.safetensors')] + ".report.json"
        if os.path.exists(report):
            os.unlink(report)


if __name__ == "__main__":
    main()
