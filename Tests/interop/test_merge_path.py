"""merge --path: every point of an interpolation path equals the single merge at that t, tensor for
tensor, byte for byte; the inputs are decoded once per tensor (the report counts the decodes)."""
import json, os

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import run, FIX
from st_raw import read_raw

A, B = os.path.join(FIX, "tiny-llama", "base"), os.path.join(FIX, "tiny-llama", "ft-a")
A16 = os.path.join(FIX, "tiny-llama", "ft-bf16")


def points(a, b, n):
    return [b if i == n - 1 else a + (b - a) * i / (n - 1) for i in range(n)]


@pytest.mark.parametrize("method,spec", [("linear", "0:1:11"), ("linear", "-0.5:1.5:5"), ("slerp", "0:1:6")])
def test_each_point_equals_the_single_merge(tmp_path, method, spec):
    inputs = [A, B] if method == "linear" else ["--base", A, A, B]
    out = tmp_path / "path"
    run("merge", "--method", method, *inputs, f"--path={spec}", "-o", out, "--quiet")   # = for a negative start
    a, b, n = spec.rsplit(":", 2)
    ts = points(float(a), float(b), int(n))
    report = json.load(open(out / "wtool-report.json"))
    folders = [p["folder"] for p in report["output"]["points"]]
    assert sorted(os.listdir(out)) == sorted(folders + ["wtool-recipe.yml", "wtool-report.json"])
    assert [p["t"] for p in report["output"]["points"]] == pytest.approx(ts)
    for t, folder in zip(ts, folders):
        assert abs(float(folder[1:]) - t) < 1e-12
        single = tmp_path / f"single{t}"
        extra = [f"--weight={1 - t!r},{t!r}"] if method == "linear" else ["--param", f"t={t!r}"]
        run("merge", "--method", method, *inputs, *extra, "-o", single, "--quiet")
        got, want = read_raw(str(out / folder / "model.safetensors")), read_raw(str(single / "model.safetensors"))
        assert got == want, (t, folder)
        assert os.path.exists(out / folder / "config.json")
    # each input tensor decoded once, whatever the number of points
    assert report["summary"]["max_reads_per_tensor"] == 1 and all(r["reads"] == 1 for r in report["tensors"])
    assert report["summary"]["points"] == len(ts)


def test_ends_of_a_linear_path_are_the_inputs(tmp_path):
    out = tmp_path / "p"
    run("merge", "--method", "linear", A, B, "--path", "0:1:3", "-o", out, "--quiet")
    a, b = load_file(os.path.join(A, "model.safetensors")), load_file(os.path.join(B, "model.safetensors"))
    t0, t1 = load_file(str(out / "t0.0" / "model.safetensors")), load_file(str(out / "t1.0" / "model.safetensors"))
    for k in a:
        assert t0[k].tobytes() == a[k].tobytes() and t1[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("args,needle", [
    (["--method", "ties", A, B, "--path", "0:1:3"], "linear or slerp"),
    (["--method", "linear", A, B, "--weight", "0.5", "--path", "0:1:3"], "do not give --weight"),
    (["--method", "linear", A, B, A, "--path", "0:1:3"], "exactly two"),
    (["--method", "linear", A, B, "--path", "0:1"], "START:STOP:COUNT"),
    (["--method", "linear", A, B, "--path", "0:1:1"], "START:STOP:COUNT"),
    (["--method", "slerp", "--base", A, A, B, "--param", "t=0.3", "--path", "0:1:3"], "do not give t"),
])
def test_misuse_is_refused_before_work(tmp_path, args, needle):
    code, _, err = run("merge", *args, "-o", tmp_path / "o", check=False)
    assert code == 2 and needle in err, err
    assert not (tmp_path / "o").exists()


def test_a_file_output_is_refused(tmp_path):
    code, _, err = run("merge", "--method", "linear", A, B, "--path", "0:1:3", "-o", tmp_path / "o.safetensors", check=False)
    assert code == 2 and "folder" in err and not (tmp_path / "o.safetensors").exists()
