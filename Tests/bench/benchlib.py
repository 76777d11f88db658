"""Shared pieces of `make bench`: generated checkpoints, timing with peak RSS, the I/O floor."""
import shutil, json, os, struct, subprocess, sys, time
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Fixtures"))
from st_raw import write_raw  # noqa: E402


def llama_like_shapes(total_bytes, bytes_per_element=2):
    shapes, size, i = {}, 0, 0
    while size < total_bytes:
        kind = ["self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"][i % 4]
        shape = (2048, 2048) if "attn" in kind else ((5632, 2048) if "up" in kind else (2048, 5632))
        shapes[f"model.layers.{i // 4}.{kind}.weight"] = shape
        size += shape[0] * shape[1] * bytes_per_element
        i += 1
    return shapes


def bf16_bytes(x):
    """f32 -> bf16 bytes, rounding to nearest even."""
    b = x.astype(np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def generate(path, total_bytes, seed=0, base=None, noise=0.002):
    """A LLaMA-like bf16 checkpoint; with `base` (a path), a fine-tune of it: base + noise."""
    if os.path.exists(path) and abs(os.path.getsize(path) - total_bytes) < 0.2e9:
        return
    print(f"generating {path} ...", flush=True)
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in llama_like_shapes(total_bytes).items():
        if base is None:
            x = rng.standard_normal(shape, dtype=np.float32) * 0.02
        else:
            raw = np.frombuffer(read_tensor_bytes(base, name), np.uint16)
            x = (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape) + rng.standard_normal(shape, dtype=np.float32) * noise
        tensors[name] = ("BF16", list(shape), bf16_bytes(x))
    write_raw(path, tensors, metadata={"format": "pt"})


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def read_tensor_bytes(path, name):
    header, start = read_header(path)
    b, e = header[name]["data_offsets"]
    with open(path, "rb") as f:
        f.seek(start + b)
        return f.read(e - b)


def timed(cmd, env=None):
    """Wall time and peak RSS (MiB) of one command, measured in a fresh helper process."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    out = subprocess.run([sys.executable, "-c", probe, *map(str, cmd)], capture_output=True, text=True, check=True, env=env)
    secs, rss_kb, rc = out.stdout.split()
    if int(rc) != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    return float(secs), int(rss_kb) / 1024


def floor(inputs, out_bytes, scratch, before=None):
    """Read every input once and write out_bytes once, fsynced (wtool fsyncs its outputs); `before`
    runs first, untimed (the cold-cache rows evict the inputs there)."""
    if before:
        before()
    os.sync()   # the disk is not still busy with an earlier job's output (a peer's is not fsynced)
    t_read, _ = timed(["sh", "-c", "cat \"$@\" > /dev/null", "sh", *inputs])
    mib = max(1, out_bytes // (1 << 20))
    t_write, _ = timed(["dd", "if=/dev/zero", f"of={scratch}", "bs=1M", f"count={mib}", "conv=fsync", "status=none"])
    os.unlink(scratch)
    return t_read + t_write


def best(f, n, fresh=()):
    """Best time and worst peak memory of n runs; `fresh` paths are removed before each run and dirty
    pages written back (outside the timing), so no run pays for the previous run's output."""
    runs = []
    for _ in range(n):
        cleanup(*fresh)
        os.sync()   # no run pays for writing back what an earlier job left dirty
        runs.append(f())
    return min(r[0] for r in runs), max(r[1] for r in runs)


def against_floor(f, floor_run, n, fresh=()):
    """n runs of f, each right after a measurement of the floor (`floor_run()`), as `best` prepares
    them: the best time, the worst peak memory, the best floor, and the median of the n ratios of
    a run to the floor measured just before it. On a shared VM the disk and the CPU change speed
    between minutes (the floor of one 1 GB merge bench went from 2.2 to 1.4 s within an hour), so a
    ratio of two bests taken minutes apart can be off by half; the median of back-to-back pairs is
    the steadier figure."""
    runs, floors = [], []
    for _ in range(n):
        cleanup(*fresh)
        floors.append(floor_run())   # floor() writes back what is dirty first
        os.sync()
        runs.append(f())
    ratios = sorted(r[0] / fl for r, fl in zip(runs, floors))
    return min(r[0] for r in runs), max(r[1] for r in runs), min(floors), ratios[len(ratios) // 2]


def cleanup(*paths):
    """Removes outputs: files, their .report.json beside them, and output folders."""
    for p in paths:
        if os.path.isdir(p):
            shutil.rmtree(p)
            continue
        for q in (p, os.path.splitext(p)[0] + ".report.json"):
            if os.path.exists(q):
                os.unlink(q)


def standard_args(repeat=2):
    """The options every generated-checkpoint benchmark takes: --wtool, --gb, --dir, --repeat."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--wtool", required=True)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--dir", default="/tmp/wtool-bench")
    ap.add_argument("--repeat", type=int, default=repeat)
    return ap.parse_args()


def gemm_rates(n=4096):
    """Best-of-3 GF/s of an n^3 matrix product in f32 and in f64 (numpy's BLAS, all cores): the
    machine's flop rate, against which a bench states what a ratio would need."""
    rng = np.random.default_rng(0)
    out = []
    for dt in (np.float32, np.float64):
        a, b = rng.standard_normal((n, n)).astype(dt), rng.standard_normal((n, n)).astype(dt)
        t_best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            a @ b.T
            t_best = min(t_best, time.perf_counter() - t)
        out.append(2 * n ** 3 / t_best / 1e9)
    return out
