"""--part I/N: n processes each write their share of a sharded folder; together they write exactly
the files the single run writes (byte for byte, index included), whatever order they finish in;
`wtool index` refuses an incomplete set or a shard of another run."""
import json, os, subprocess

import pytest

from conftest import run, WTOOL, FIX

TL = os.path.join(FIX, "tiny-llama")
A, B = os.path.join(TL, "base"), os.path.join(TL, "ft-a")

JOBS = {
    "convert": ["convert", A, "--dtype", "bf16"],
    "merge": ["merge", "--method", "ties", "--base", A, B, B, "--weight", "1,1", "--density", "0.5"],
    "prune": ["prune-sparse", B, "--method", "magnitude", "--sparsity", "0.5"],
    "prune-hidden": ["prune-sparse", B, "--method", "structured", "--target", "hidden"],
    "quantize-ct": ["quantize", B, "--scheme", "int4", "--group-size", "16"],
    "quantize-fake": ["quantize", B, "--scheme", "q4_0", "--format", "fake"],
    "task-vector": ["task-vector", "apply", "--base", A, B, "--inputs", "model", "--scale", "0.5"],
}


def weight_files(folder):
    return sorted(f for f in os.listdir(folder) if f.startswith("model") and (f.endswith(".safetensors") or f.endswith(".index.json")))


@pytest.mark.parametrize("job", list(JOBS))
@pytest.mark.parametrize("n", [2, 3])
def test_parts_write_what_the_single_run_writes(tmp_path, job, n):
    args = JOBS[job]
    run(*args, "-o", tmp_path / "single", "--shard-size", "20KB", "--quiet")
    procs = [subprocess.Popen([WTOOL, *map(str, args), "-o", str(tmp_path / "parts"), "--shard-size", "20KB", "--part", f"{i}/{n}", "--quiet"])
             for i in range(1, n + 1)]
    assert all(p.wait() == 0 for p in procs)
    run("index", tmp_path / "parts", "--quiet")
    single, parts = weight_files(tmp_path / "single"), weight_files(tmp_path / "parts")
    assert len(single) >= 3 and single == parts
    for f in single:
        assert open(tmp_path / "single" / f, "rb").read() == open(tmp_path / "parts" / f, "rb").read(), f
    report = json.load(open(tmp_path / "parts" / "wtool-report.json"))
    assert report["parameters"]["parts"] == n and report["summary"]["shards"] == len(single) - 1
    assert sorted(os.listdir(tmp_path / "parts")) == sorted(os.listdir(tmp_path / "single") + [f"wtool-report.part-{i}-of-{n}.json" for i in range(1, n + 1)])


def test_index_refuses_a_missing_shard_or_another_runs(tmp_path):
    args = JOBS["merge"]
    for i in (1, 2):
        run(*args, "-o", tmp_path / "p", "--shard-size", "20KB", "--part", f"{i}/2", "--quiet")
    os.remove(tmp_path / "p" / "model.safetensors.index.json")
    shard = sorted(f for f in os.listdir(tmp_path / "p") if f.startswith("model-"))[-1]
    os.rename(tmp_path / "p" / shard, tmp_path / "kept")
    code, _, err = run("index", tmp_path / "p", check=False)
    assert code == 1 and shard in err and "missing" in err
    assert not (tmp_path / "p" / "model.safetensors.index.json").exists()
    # the same shard from a run with other parameters
    other = ["merge", "--method", "ties", "--base", A, B, B, "--weight", "1,1", "--density", "0.6"]
    run(*other, "-o", tmp_path / "q", "--shard-size", "20KB", "--quiet")
    os.rename(tmp_path / "q" / shard, tmp_path / "p" / shard)
    code, _, err = run("index", tmp_path / "p", check=False)
    assert code == 1 and "another run" in err
    os.rename(tmp_path / "kept", tmp_path / "p" / shard)
    run("index", tmp_path / "p", "--quiet")


@pytest.mark.parametrize("args,needle", [
    (["convert", A, "-o", "OUT", "--part", "1/2"], "--shard-size"),
    (["convert", A, "-o", "OUT.safetensors", "--part", "1/2"], "--shard-size"),
    (["convert", A, "-o", "OUT", "--shard-size", "20KB", "--part", "3/2"], "I/N"),
    (["inspect", A, "--part", "1/2"], "writes none"),
    (["diff", A, B, "--part", "1/2"], "writes none"),
    (["lowrank-svd", "compress", A, "-o", "OUT", "--rank", "2", "--shard-size", "20KB", "--part", "1/2"], "not supported"),
    (["quantize", A, "-o", "OUT.gguf", "--scheme", "q8_0", "--part", "1/2"], "one file"),
    (["merge", "--method", "linear", A, B, "--path", "0:1:3", "-o", "OUT", "--shard-size", "20KB", "--part", "1/2"], "--path"),
])
def test_misuse(tmp_path, args, needle):
    args = [str(tmp_path / "out") + a[3:] if a.startswith("OUT") else a for a in args]
    code, _, err = run(*args, check=False)
    assert code == 2 and needle in err, err
    assert not any(p.startswith("out") for p in os.listdir(tmp_path))
