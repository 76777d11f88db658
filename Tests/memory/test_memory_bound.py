"""make test-memory: every writing subcommand on a generated ~6 GB bf16 checkpoint, each inside a
memory cgroup limited to 1.5 GB (cgroup v2 memory.max, or v1 memory.limit_in_bytes; skipped with a
message where neither can be created, e.g. without root). Each job must complete; the peak
resident memory of each is printed. Not part of make test: it writes ~12 GB and takes minutes."""
import json, os, shutil, subprocess, time
import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WTOOL = os.environ.get("WTOOL", os.path.join(ROOT, ".build", "release", "wtool"))
DATA = os.environ.get("WTOOL_MEMTEST_DIR", "/tmp/wtool-memtest")
LIMIT = 1536 * (1 << 20)
LAYERS, D, F = int(os.environ.get("WTOOL_MEMTEST_LAYERS", "16")), 4096, 11008


def random_bf16(rng, shape, scale_exp=0x3C):
    """Finite bf16 bit patterns around 2^(scale_exp-127-... ) without numpy float work: sign, a
    narrow exponent band and a random mantissa (fast enough for gigabytes)."""
    n = int(np.prod(shape))
    bits = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    exp = (scale_exp - (bits >> 13 & 3)).astype(np.uint16)       # 4 exponents: values within 16x
    return ((bits & 0x807F) | (exp << 7)).reshape(shape)


def write_model(folder, seed):
    """A LLaMA-shaped folder: LAYERS layers of 4 x (D, D) and 3 x (F, D) bf16 matrices, one shard per layer."""
    if os.path.exists(os.path.join(folder, "model.safetensors.index.json")):
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight_map, total = {}, 0
    for l in range(LAYERS):
        tensors = {f"model.layers.{l}.self_attn.{p}.weight": (D, D) for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
        tensors |= {f"model.layers.{l}.mlp.gate_proj.weight": (F, D), f"model.layers.{l}.mlp.up_proj.weight": (F, D),
                    f"model.layers.{l}.mlp.down_proj.weight": (D, F), f"model.layers.{l}.input_layernorm.weight": (D,)}
        name = f"model-{l + 1:05d}-of-{LAYERS:05d}.safetensors"
        header, offset, blobs = {}, 0, []
        for k in sorted(tensors):
            a = random_bf16(rng, tensors[k])
            header[k] = {"dtype": "BF16", "shape": list(tensors[k]), "data_offsets": [offset, offset + a.nbytes]}
            offset += a.nbytes
            blobs.append(a)
            weight_map[k] = name
        h = json.dumps(header).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(len(h).to_bytes(8, "little")); f.write(h)
            for b in blobs: f.write(b.tobytes())
        total += offset
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, open(os.path.join(folder, "model.safetensors.index.json"), "w"))
    json.dump({"model_type": "llama", "hidden_size": D, "intermediate_size": F, "num_hidden_layers": LAYERS, "num_attention_heads": 32,
               "num_key_value_heads": 32, "vocab_size": 32000, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
               "max_position_embeddings": 4096}, open(os.path.join(folder, "config.json"), "w"))


class Cgroup:
    """A memory cgroup with a hard limit (v2 first, then v1)."""
    def __init__(self, limit):
        self.path, self.v2 = None, False
        for base, v2 in (("/sys/fs/cgroup", True), ("/sys/fs/cgroup/unified", True), ("/sys/fs/cgroup/memory", False)):
            if v2 and not os.path.exists(os.path.join(base, "cgroup.controllers")):
                continue
            if v2 and "memory" not in open(os.path.join(base, "cgroup.controllers")).read().split():
                continue
            p = os.path.join(base, f"wtool-memtest-{os.getpid()}")
            try:
                os.mkdir(p)
                open(os.path.join(p, "memory.max" if v2 else "memory.limit_in_bytes"), "w").write(str(limit))
                self.path, self.v2 = p, v2
                return
            except OSError:
                if os.path.isdir(p): os.rmdir(p)
        pytest.skip("no memory cgroup can be created here (needs root and a memory controller)")

    def run(self, args):
        """Runs the command inside the cgroup; returns (status, stderr, peak RSS MiB, cgroup peak MiB)."""
        procs = os.path.join(self.path, "cgroup.procs")
        def enter():
            open(procs, "w").write(str(os.getpid()))
        r = subprocess.run(["/usr/bin/time", "-f", "%M", *args], capture_output=True, text=True, preexec_fn=enter)
        rss = int(r.stderr.strip().splitlines()[-1]) / 1024 if r.stderr.strip() else -1
        peak_file = os.path.join(self.path, "memory.peak" if self.v2 else "memory.max_usage_in_bytes")
        peak = int(open(peak_file).read()) / (1 << 20) if os.path.exists(peak_file) else -1
        if not self.v2:
            open(peak_file, "w").write("0")
        return r.returncode, r.stderr, rss, peak

    def close(self):
        if self.path: os.rmdir(self.path)


@pytest.fixture(scope="module")
def models():
    base, ft = os.path.join(DATA, "base"), os.path.join(DATA, "ft")
    write_model(base, 1)
    write_model(ft, 2)
    stats = os.path.join(DATA, "acts.safetensors")
    if not os.path.exists(stats):
        from safetensors.numpy import save_file
        rng = np.random.default_rng(3)
        s = {}
        for l in range(LAYERS):
            for p, n in (("self_attn.q_proj", D), ("self_attn.k_proj", D), ("self_attn.v_proj", D), ("self_attn.o_proj", D),
                         ("mlp.gate_proj", D), ("mlp.up_proj", D), ("mlp.down_proj", F)):
                s[f"model.layers.{l}.{p}.act_sq_sum"] = rng.random(n).astype(np.float32)
        save_file(s, stats)
    return base, ft, stats


JOBS = {
    "merge linear": lambda b, f, s, o: ["merge", "--method", "linear", b, f, "--weight", "0.5,0.5", "-o", o],
    "merge ties": lambda b, f, s, o: ["merge", "--method", "ties", "--base", b, f, "--weight", "1", "--density", "0.5", "-o", o],
    "quantize q4_k": lambda b, f, s, o: ["quantize", b, "-o", o + ".gguf", "--scheme", "q4_k"],
    "quantize int4": lambda b, f, s, o: ["quantize", b, "-o", o, "--scheme", "int4"],
    "prune magnitude": lambda b, f, s, o: ["prune-sparse", b, "-o", o, "--sparsity", "0.5"],
    "prune wanda": lambda b, f, s, o: ["prune-sparse", b, "-o", o, "--method", "wanda", "--stats", s],
    "task-vector apply": lambda b, f, s, o: ["task-vector", "apply", "--base", b, f, "--inputs", "model", "--scale", "0.5", "-o", o],
    "lowrank extract": lambda b, f, s, o: ["lowrank-svd", "extract", "--base", b, f, "-o", o, "--rank", "16"],
}


@pytest.mark.parametrize("job", list(JOBS))
def test_job_completes_within_the_memory_limit(models, job, tmp_path_factory):
    base, ft, stats = models
    out = os.path.join(DATA, "out")
    for p in (out, out + ".gguf"):
        shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else (os.path.exists(p) and os.remove(p))
    cg = Cgroup(LIMIT)
    try:
        t = time.time()
        code, err, rss, peak = cg.run([WTOOL, *JOBS[job](base, ft, stats, out), "--quiet"])
        print(f"\n{job}: exit {code}, {time.time() - t:.1f} s, peak RSS {rss:.0f} MiB, cgroup peak {peak:.0f} MiB (limit {LIMIT >> 20} MiB)")
        assert code == 0, err[-2000:]
        assert rss < LIMIT / (1 << 20)
    finally:
        cg.close()
        for p in (out, out + ".gguf"):
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else (os.path.exists(p) and os.remove(p))


# One tensor larger than the limit once decoded: a 128256 x 4096 bf16 embedding is 1 GiB per file and
# 2 GiB per input in f32, so a method that decodes whole inputs cannot finish in 1.5 GB; the
# task-arithmetic family streams it in row blocks.
V = int(os.environ.get("WTOOL_MEMTEST_VOCAB", "128256"))
EMBEDDING_JOBS = {
    "merge linear (embedding)": lambda b, f, g, o: ["merge", "--method", "linear", b, f, g, "--weight", "1", "-o", o],
    "merge slerp (embedding)": lambda b, f, g, o: ["merge", "--method", "slerp", "--base", b, f, "--param", "t=0.3", "-o", o],
    "merge ties (embedding)": lambda b, f, g, o: ["merge", "--method", "ties", "--base", b, f, g, "--weight", "1", "--density", "0.5", "-o", o],
    "merge dare_ties (embedding)": lambda b, f, g, o: ["merge", "--method", "dare_ties", "--base", b, f, g, "--weight", "1", "--density", "0.5", "-o", o],
    "merge della (embedding)": lambda b, f, g, o: ["merge", "--method", "della", "--base", b, f, "--weight", "1", "--density", "0.5", "-o", o],
    "merge breadcrumbs (embedding)": lambda b, f, g, o: ["merge", "--method", "breadcrumbs", "--base", b, f, "--weight", "1", "--density", "0.5", "-o", o],
    "merge model_stock (embedding)": lambda b, f, g, o: ["merge", "--method", "model_stock", "--base", b, f, g, "-o", o],
    "merge sce (embedding)": lambda b, f, g, o: ["merge", "--method", "sce", "--base", b, f, g, "--param", "select_topk=0.5", "-o", o],
    "merge multislerp (embedding)": lambda b, f, g, o: ["merge", "--method", "multislerp", "--base", b, f, g, "--weight", "0.5,0.5", "-o", o],
    "merge karcher (embedding)": lambda b, f, g, o: ["merge", "--method", "karcher", b, f, g, "--param", "max_iter=2", "-o", o],
    "task-vector apply ties (embedding)": lambda b, f, g, o: ["task-vector", "apply", "--base", b, f, g, "--inputs", "model", "--method", "ties",
                                                              "--density", "0.5", "-o", o],
}


@pytest.fixture(scope="module")
def embeddings():
    paths = []
    os.makedirs(DATA, exist_ok=True)
    for seed in (11, 12, 13):
        p = os.path.join(DATA, f"embedding-{seed}.safetensors")
        if not os.path.exists(p):
            a = random_bf16(np.random.default_rng(seed), (V, D))
            h = json.dumps({"model.embed_tokens.weight": {"dtype": "BF16", "shape": [V, D], "data_offsets": [0, a.nbytes]}}).encode()
            h += b" " * (-len(h) % 8)
            with open(p + ".tmp", "wb") as f:
                f.write(len(h).to_bytes(8, "little")); f.write(h); f.write(a.tobytes())
            os.rename(p + ".tmp", p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("job", list(EMBEDDING_JOBS))
def test_embedding_larger_than_memory(embeddings, job):
    out = os.path.join(DATA, "out-embedding.safetensors")
    cg = Cgroup(LIMIT)
    try:
        t = time.time()
        code, err, rss, peak = cg.run([WTOOL, *EMBEDDING_JOBS[job](*embeddings, out), "--quiet"])
        print(f"\n{job}: exit {code}, {time.time() - t:.1f} s, peak RSS {rss:.0f} MiB, cgroup peak {peak:.0f} MiB (limit {LIMIT >> 20} MiB)")
        assert code == 0, err[-2000:]
        assert rss < LIMIT / (1 << 20)
        report = json.load(open(os.path.join(DATA, "out-embedding.report.json")))
        assert report["tensors"][0].get("blocked") is True or "linear" in job
    finally:
        cg.close()
        for p in (out, os.path.join(DATA, "out-embedding.report.json")):
            if os.path.exists(p): os.remove(p)
