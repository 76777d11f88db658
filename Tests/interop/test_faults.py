"""Kills, full disks, inputs that change underneath, concurrent writers and thread counts: the
output's name holds the old complete result, the new complete result, or nothing; never a mix,
never a crash; and the same job writes the same bytes for any --threads."""
import glob, json, os, random, shutil, signal, subprocess, time
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from conftest import FIX, WTOOL, run

TL = os.path.join(FIX, "tiny-llama")


def big_input(tmp_path, mb=24, tensors=12):
    """A bf16 checkpoint of `mb` MB in `tensors` tensors (big enough that a write takes a while)."""
    import ml_dtypes
    rng = np.random.default_rng(0)
    n = mb * (1 << 20) // 2 // tensors
    t = {f"model.layers.{i}.mlp.up_proj.weight": rng.standard_normal((n // 256, 256)).astype(ml_dtypes.bfloat16) for i in range(tensors)}
    p = tmp_path / "big.safetensors"
    save_file(t, str(p))
    return p


def complete(folder):
    """The folder is a whole checkpoint (index, every shard, every tensor, the report); returns the
    one dtype all its tensors have."""
    index = json.load(open(os.path.join(folder, "model.safetensors.index.json")))
    dtypes, seen = set(), 0
    for s in sorted(set(index["weight_map"].values())):
        t = load_file(os.path.join(folder, s))
        dtypes |= {str(v.dtype) for v in t.values()}
        seen += len(t)
    assert seen == len(index["weight_map"]) and len(dtypes) == 1
    assert os.path.exists(os.path.join(folder, "wtool-report.json"))
    return dtypes.pop()


def temporaries(parent):
    return [n for n in os.listdir(parent) if ".wtool-tmp." in n]


def test_sigkill_at_random_moments_leaves_old_new_or_nothing(tmp_path):
    src = big_input(tmp_path)
    out = tmp_path / "out"
    job = [WTOOL, "convert", src, "-o", out, "--dtype", "f16", "--shard-size", "5MB", "--quiet", "--threads", "2"]
    # kills spread over the length of a whole run on this machine (a fixed window would land after
    # the end on a fast machine and before the start on a slow one)
    t0 = time.monotonic()
    subprocess.run(job, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    whole = time.monotonic() - t0
    shutil.rmtree(out)
    rng = random.Random(1)
    seen, left = [], False
    # half the trials with no output yet, half replacing an old complete f32 folder
    for trial in range(16):
        shutil.rmtree(out, ignore_errors=True)
        old = trial >= 8
        if old:
            run("convert", src, "-o", out, "--dtype", "f32", "--shard-size", "20MB", "--quiet")
        p = subprocess.Popen(job, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 1.2 * whole))
        p.send_signal(signal.SIGKILL)
        p.wait()
        # what a kill inside the run left, before the next run into this parent removes it
        left = left or temporaries(tmp_path) != []
        if not out.exists():
            assert not old, "the old complete folder was lost"
            seen.append("nothing")
        else:
            d = complete(out)
            assert d == "float16" or (old and d == "float32"), d
            seen.append("new" if d == "float16" else "old")
    assert "nothing" in seen or "old" in seen, f"no kill landed inside a run: {seen}"
    assert left, f"no kill left a temporary (outcomes {seen}, a whole run {whole:.2f} s)"
    # the next run into the same parent removes what a kill left (one more kill mid-run first when
    # the last trial finished: its run removed the earlier ones)
    for fraction in (0.5, 0.3, 0.7, 0.2, 0.8):
        if temporaries(tmp_path):
            break
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.Popen(job, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(fraction * whole)
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert temporaries(tmp_path) != []
    run("convert", TL + "/base", "-o", tmp_path / "other", "--quiet")
    assert temporaries(tmp_path) == []


def test_existing_output_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "out"
    run("convert", TL + "/base", "-o", out, "--shard-size", "20KB", "--quiet")
    assert len(glob.glob(str(out / "model-*.safetensors"))) > 1
    run("convert", TL + "/base", "-o", out, "--quiet")
    assert sorted(os.listdir(out)) == sorted(["model.safetensors", "config.json", "generation_config.json",
                                              "tokenizer_config.json", "wtool-report.json"])
    assert temporaries(tmp_path) == []


def test_a_folder_that_is_not_a_model_is_never_replaced(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    code, _, err = run("convert", TL + "/base", "-o", out, check=False)
    assert code == 1 and "is not a model folder" in err
    assert os.listdir(out) == ["holiday.jpg"] and temporaries(tmp_path) == []


def tmpfs(tmp_path, size="3m"):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.decode().strip()}")
    return mnt


@pytest.mark.parametrize("target", ["folder", "file", "gguf"])
def test_disk_full_names_the_output_and_leaves_nothing(tmp_path, target):
    src = big_input(tmp_path, mb=8, tensors=4)
    mnt = tmpfs(tmp_path)
    try:
        out = {"folder": mnt / "out", "file": mnt / "out.safetensors", "gguf": mnt / "out.gguf"}[target]
        args = ["quantize", src, "-o", out, "--scheme", "q8_0"] if target == "gguf" else ["convert", src, "-o", out, "--dtype", "f32"]
        code, _, err = run(*args, check=False)
        assert code == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and "No space left on device" in lines[0], err
        assert os.listdir(mnt) == [], os.listdir(mnt)
    finally:
        subprocess.run(["umount", str(mnt)])


def change_while_converting(tmp_path, src, change):
    """Runs a conversion and applies `change` to its input mid-run, later each attempt, until a
    change lands inside the run; returns (input, output, status, stderr)."""
    for attempt in range(10):
        victim = tmp_path / f"v{attempt}.safetensors"
        shutil.copy(src, victim)
        out = tmp_path / f"o{attempt}"
        p = subprocess.Popen([WTOOL, "convert", victim, "-o", out, "--dtype", "f32", "--threads", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.05 + 0.03 * attempt)
        change(victim)
        _, err = p.communicate()
        if p.returncode != 0:
            return victim, out, p.returncode, err
    pytest.fail("the change never landed inside the run")


def test_input_truncated_underneath_is_a_clean_error(tmp_path):
    """SIGBUS on a mapped input becomes one line naming the file, exit 1, nothing written."""
    victim, out, code, err = change_while_converting(tmp_path, big_input(tmp_path, mb=64, tensors=16),
                                                     lambda v: os.truncate(v, 4096))
    assert code == 1, (code, err)
    # the SIGBUS handler's message (the stamp check after the run says "rewritten")
    assert err.strip().splitlines() == [err.strip()] and str(victim) in err and "truncated" in err, err
    assert not out.exists() and temporaries(tmp_path) == []


def test_input_rewritten_in_place_is_detected(tmp_path):
    """Same size, other bytes (no SIGBUS): the inputs' stamps are checked before publishing."""
    def rewrite(v):
        with open(v, "r+b") as f:
            f.seek(-8, 2)
            f.write(b"\0" * 8)
    victim, out, code, err = change_while_converting(tmp_path, big_input(tmp_path, mb=48, tensors=12), rewrite)
    assert code == 1 and str(victim) in err and "changed while it was being read" in err, err
    assert not out.exists()


def test_concurrent_writers_leave_one_complete_result(tmp_path):
    src = big_input(tmp_path, mb=16, tensors=8)
    out = tmp_path / "out"
    ps = [subprocess.Popen([WTOOL, "convert", src, "-o", out, "--dtype", d, "--shard-size", "5MB", "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for d in ("f16", "f32")]
    codes = [p.wait() for p in ps]
    errs = [p.stderr.read() for p in ps]
    assert all(c in (0, 1) for c in codes), errs
    assert any(c == 0 for c in codes), errs
    for c, e in zip(codes, errs):
        assert c == 0 or len(e.strip().splitlines()) == 1
    assert complete(out) in ("float16", "float32") and temporaries(tmp_path) == []


def reports_without_timing(path):
    r = json.load(open(path))
    r.pop("timing", None)
    r.pop("command", None)
    s = r.get("summary", {})
    for k in list(s):
        if "throughput" in k or k.endswith("_s"):
            s.pop(k)
    return r


MK = os.path.join(FIX, "mergekit")
JOBS = {
    "convert": ["convert", f"{TL}/ft-sharded", "--dtype", "bf16"],
    "merge-dare_ties": ["merge", "--config", f"{MK}/dare_ties.yml", "--seed", "3"],
    "merge-della": ["merge", "--method", "della", "--base", f"{MK}/models/base", f"{MK}/models/ft1", f"{MK}/models/ft2",
                    "--weight", "1,1", "--density", "0.5", "--epsilon", "0.1", "--seed", "5"],
    "merge-ties": ["merge", "--config", f"{MK}/ties.yml"],
    "task-vector-extract": ["task-vector", "extract", "--base", f"{TL}/base", f"{TL}/ft-a"],
    "task-vector-dare": ["task-vector", "apply", "--base", f"{TL}/base", f"{TL}/ft-a", "--inputs", "model", "--method", "dare",
                         "--density", "0.5", "--seed", "2"],
    "quantize-q4_k": ["quantize", f"{FIX}/quant/weights.safetensors", "--scheme", "q4_k", "--format", "fake"],
    "quantize-hqq4": ["quantize", f"{FIX}/quant/weights.safetensors", "--scheme", "hqq4", "--group-size", "64"],
    "prune-wanda-dsnot": None,   # built in the test (needs a statistics file)
    "prune-24": ["prune-sparse", f"{TL}/base", "--nm", "2:4"],
    "lowrank-extract": ["lowrank-svd", "extract", "--base", f"{TL}/base", f"{TL}/ft-a", "--rank", "4", "--svd", "randomized"],
    "lowrank-compress": ["lowrank-svd", "compress", f"{TL}/base", "--rank", "4", "--svd", "randomized", "--seed", "9"],
    "permute-match": ["permute-match", "--reference", f"{FIX}/permute/a.safetensors", f"{FIX}/permute/b.safetensors"],
}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_outputs_and_reports_are_identical_for_any_thread_count(tmp_path, job):
    args = JOBS[job]
    if args is None:
        w = load_file(f"{TL}/base/model.safetensors")
        rng = np.random.default_rng(3)
        stats = {}
        for k, v in w.items():
            if ".layers." in k and v.ndim == 2 and "norm" not in k:
                m = k[: -len(".weight")]
                stats[m + ".act_sq_sum"] = (rng.random(v.shape[1]) * 10).astype(np.float32)
                stats[m + ".act_mean"] = rng.standard_normal(v.shape[1]).astype(np.float32)
                stats[m + ".act_var"] = (rng.random(v.shape[1]) + 0.1).astype(np.float32)
        save_file(stats, str(tmp_path / "stats.safetensors"))
        args = ["prune-sparse", f"{TL}/base", "--method", "wanda", "--stats", tmp_path / "stats.safetensors", "--dsnot"]
    outs = []
    for t in ("1", "2"):
        o = tmp_path / f"t{t}"
        run(*args, "-o", o, "--threads", t, "--quiet")
        files = sorted(p for p in glob.glob(str(o / "**"), recursive=True) if os.path.isfile(p) and not p.endswith("wtool-report.json"))
        outs.append(({os.path.relpath(p, o): open(p, "rb").read() for p in files}, reports_without_timing(o / "wtool-report.json")))
    assert outs[0][0] == outs[1][0]
    assert json.dumps(outs[0][1], sort_keys=True) == json.dumps(outs[1][1], sort_keys=True).replace(str(tmp_path / "t2"), str(tmp_path / "t1"))


def test_folder_named_with_a_trailing_slash_or_as_dot(tmp_path):
    """`-o out/` is the same folder as `-o out`; `-o .` cannot be built beside itself."""
    run("convert", TL + "/base", "-o", str(tmp_path / "out") + "/", "--quiet")
    assert (tmp_path / "out" / "model.safetensors").exists()
    run("convert", TL + "/base", "-o", str(tmp_path / "out") + "//", "--dtype", "f16", "--quiet")
    assert load_file(str(tmp_path / "out" / "model.safetensors"))["lm_head.weight"].dtype == np.float16
    r = subprocess.run([WTOOL, "convert", TL + "/base", "-o", "."], cwd=tmp_path / "out", capture_output=True, text=True)
    assert r.returncode == 1 and "name the output folder" in r.stderr
    assert temporaries(tmp_path) == [] and temporaries(tmp_path / "out") == []


@pytest.mark.parametrize("out", ["o.safetensors", "o.gguf"])
def test_file_outputs_remove_what_a_killed_run_left(tmp_path, out):
    """A temporary of a process that no longer runs is removed by the next run into that folder;
    one of a live process (this test's) is left alone."""
    p = subprocess.Popen(["true"]); p.wait()   # a PID that has exited
    stale = tmp_path / f".{out}.wtool-tmp.{p.pid}.abcdef"
    stale.write_bytes(b"partial")
    alive = tmp_path / f".{out}.wtool-tmp.{os.getpid()}.ghijkl"
    alive.write_bytes(b"someone else's")
    args = ["quantize", TL + "/base", "-o", tmp_path / out, "--scheme", "q8_0"] if out.endswith(".gguf") else ["convert", TL + "/base", "-o", tmp_path / out]
    run(*args, "--quiet")
    assert not stale.exists() and alive.exists()


def test_an_output_name_held_by_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_bytes(b"not a folder")
    code, _, err = run("convert", TL + "/base", "-o", tmp_path / "out", check=False)
    assert code == 1 and "exists and is not a folder" in err
    assert (tmp_path / "out").read_bytes() == b"not a folder" and temporaries(tmp_path) == []
