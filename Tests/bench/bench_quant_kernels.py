#!/usr/bin/env python3
"""`make bench`, quantizer kernels: every ggml block encoder wtool has, one core each, against
ggml's own C encoder (`ggml_quantize_chunk` from the libggml-base.so of the llama.cpp that
`make clients-venv` builds) on the same rows. wtool's figure is the block encoders' own time,
which `quantize --threads 1` measures and reports (timing.encode_thread_s); the whole job
(read, encode, decode back for the error, write with fsync) is printed beside it. Prints MB/s of
f32 input and ratios; never asserts a time.
"""
import ctypes, glob, json, os, shutil, time
import numpy as np
from benchlib import standard_args, timed
from st_raw import write_raw

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TYPES = {"q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14,
         "tq1_0": 34, "tq2_0": 35}
ROWS, COLS = 2048, 8192


def ggml_library():
    found = glob.glob(os.path.join(ROOT, ".venv-clients", "lib", "python3*", "site-packages", "llama_cpp", "lib", "libggml-base.so"))
    if not found:
        raise SystemExit("ggml's library is missing: `make clients-venv` builds llama.cpp (make bench does it first)")
    g = ctypes.CDLL(found[0])
    g.ggml_row_size.restype = ctypes.c_size_t
    g.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    g.ggml_quantize_init.argtypes = [ctypes.c_int]
    g.ggml_quantize_chunk.restype = ctypes.c_size_t
    g.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return g


def main():
    a = standard_args(repeat=3)
    os.makedirs(a.dir, exist_ok=True)
    g = ggml_library()
    x = np.random.default_rng(9).standard_normal((ROWS, COLS), dtype=np.float32) * 0.02
    src = os.path.join(a.dir, "kernels.safetensors")
    write_raw(src, {"model.layers.0.mlp.up_proj.weight": ("F32", [ROWS, COLS], x.tobytes())}, metadata={"format": "pt"})
    out = os.path.join(a.dir, "kernels.gguf")
    report = os.path.join(a.dir, "kernels.report.json")
    print(f"\nblock encoders, one core, {ROWS}x{COLS} f32 ({x.nbytes / 1e6:.0f} MB), best of {a.repeat}:")
    print(f"{'type':<6} {'ggml MB/s':>10} {'wtool MB/s':>11} {'vs ggml':>8} {'wtool job s':>12} {'job MB/s':>9}")
    for name, tid in TYPES.items():
        buf = np.empty(g.ggml_row_size(tid, COLS) * ROWS, np.uint8)
        g.ggml_quantize_init(tid)
        t_ggml = float("inf")
        for _ in range(a.repeat):
            t = time.perf_counter()
            g.ggml_quantize_chunk(tid, x.ctypes.data, buf.ctypes.data, 0, ROWS, COLS, None)
            t_ggml = min(t_ggml, time.perf_counter() - t)
        t_enc = t_job = float("inf")
        for _ in range(a.repeat):
            for p in (out, report):
                if os.path.exists(p):
                    os.unlink(p)
            t, _ = timed([a.wtool, "quantize", src, "-o", out, "--scheme", name, "--threads", "1", "--quiet"])
            t_job = min(t_job, t)
            with open(report) as f:
                t_enc = min(t_enc, json.load(f)["timing"]["encode_thread_s"])
        mb = x.nbytes / 1e6
        print(f"{name:<6} {mb / t_ggml:>10.0f} {mb / t_enc:>11.0f} {t_ggml / t_enc:>7.2f}x {t_job:>12.3f} {mb / t_job:>9.0f}")
    # compressed-tensors RTN integers: no C peer does this; the aim is 1.5 GB/s of f32 per core with
    # the error measured (the numpy peer is in bench_quantize).
    print(f"\n{'RTN':<22} {'wtool MB/s':>11} {'wtool job s':>12} {'job MB/s':>9}   (codes, packing, decoding back and the error, one core)")
    ct = os.path.join(a.dir, "kernels-ct")
    for label, args in [("int4 group 128", ["--scheme", "int4", "--group-size", "128"]),
                        ("int4 group 128 asym", ["--scheme", "int4", "--group-size", "128", "--asymmetric"]),
                        ("int8 channel", ["--scheme", "int8", "--granularity", "channel"])]:
        t_enc = t_job = float("inf")
        for _ in range(a.repeat):
            shutil.rmtree(ct, ignore_errors=True)
            t, _ = timed([a.wtool, "quantize", src, "-o", ct, *args, "--threads", "1", "--quiet"])
            t_job = min(t_job, t)
            with open(os.path.join(ct, "wtool-report.json")) as f:
                t_enc = min(t_enc, json.load(f)["timing"]["encode_thread_s"])
        mb = x.nbytes / 1e6
        print(f"{label:<22} {mb / t_enc:>11.0f} {t_job:>12.3f} {mb / t_job:>9.0f}")
    shutil.rmtree(ct, ignore_errors=True)
    for p in (out, report, src):
        if os.path.exists(p):
            os.unlink(p)
    print("vs ggml > 1: wtool's encoder is faster per core; the job column adds reading, decoding back, the error and the fsynced write")


if __name__ == "__main__":
    main()
