"""Every option wtool parses either changes the result or is refused (exit 2, nothing written):
--include/--exclude select what task-vector apply and lowrank-svd apply change, and options that
belong to another method are usage errors."""
import json, os
import numpy as np
import pytest
from safetensors.numpy import load_file
from conftest import FIX, run

TL = os.path.join(FIX, "tiny-llama")
BASE, FT = f"{TL}/base", f"{TL}/ft-a"


def tensors(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def test_task_vector_apply_changes_only_the_selection(tmp_path):
    run("task-vector", "apply", "--base", BASE, FT, "--inputs", "model", "--scale", "0.5", "--include", "*.mlp.*",
        "-o", tmp_path / "o", "--quiet")
    base, ft, got = tensors(BASE), tensors(FT), tensors(tmp_path / "o")
    rows = {r["name"]: r for r in json.load(open(tmp_path / "o" / "wtool-report.json"))["tensors"]}
    changed = 0
    for k, b in base.items():
        if ".mlp." in k:
            np.testing.assert_allclose(got[k], b + 0.5 * (ft[k].astype(np.float64) - b), rtol=1e-6, atol=1e-7)
            changed += not np.array_equal(got[k], b)
        else:
            assert got[k].tobytes() == b.tobytes() and rows[k].get("excluded") is True, k
    assert changed > 0


def test_lowrank_apply_changes_only_the_selection(tmp_path):
    run("lowrank-svd", "extract", "--base", BASE, FT, "-o", tmp_path / "ad", "--rank", "4", "--quiet")
    run("lowrank-svd", "apply", "--base", BASE, tmp_path / "ad", "-o", tmp_path / "all", "--quiet")
    run("lowrank-svd", "apply", "--base", BASE, tmp_path / "ad", "-o", tmp_path / "some", "--exclude", "*.self_attn.*", "--quiet")
    base, full, some = tensors(BASE), tensors(tmp_path / "all"), tensors(tmp_path / "some")
    for k in base:
        want = base[k] if ".self_attn." in k else full[k]
        assert some[k].tobytes() == want.tobytes(), k
    assert any(not np.array_equal(full[k], base[k]) for k in base if ".self_attn." in k)


@pytest.mark.parametrize("args,needle", [
    (["task-vector", "apply", "--base", BASE, FT, "--inputs", "model", "--seed", "3"], "--rescale and --seed belong to --method dare"),
    (["task-vector", "apply", "--base", BASE, FT, "--inputs", "model", "--density", "0.5"], "--density and --normalize belong"),
    (["task-vector", "apply", "--base", BASE, FT, "--inputs", "model", "--method", "ties", "--rescale", "l1"], "belong to --method dare"),
    (["merge", "--method", "linear", BASE, FT, "--weight", "0.5", "--seed", "4"], "--seed applies to the methods that drop entries"),
    (["lowrank-svd", "compress", BASE, "--rank", "4", "--svd", "exact", "--seed", "5"], "not --svd exact"),
    (["lowrank-svd", "compress", BASE, "--rank", "4", "--svd", "exact", "--oversample", "4"], "not --svd exact"),
    (["prune-sparse", BASE, "--method", "structured", "--include", "*.mlp.*"], "structured pruning takes"),
    (["prune-sparse", BASE, "--method", "magnitude", "--target", "heads"], "--target belongs to --method structured"),
    (["prune-sparse", BASE, "--dsnot-cycles", "3"], "need --dsnot"),
    (["prune-sparse", BASE, "--rank", "3"], "--rank belongs to --method principal"),
    (["prune-sparse", BASE, "--fallback", "magnitude"], "--fallback belongs to --method wanda"),
    (["prune-sparse", BASE, "--nm", "2:4", "--sparsity", "0.5"], "give one of --nm and --sparsity"),
    (["quantize", BASE, "--scheme", "q4_0", "--group-size", "64"], "--group-size applies to group granularity"),
])
def test_options_of_another_method_are_refused(tmp_path, args, needle):
    code, _, err = run(*args, "-o", tmp_path / "out", check=False)
    assert code == 2 and needle in err, err
    assert not (tmp_path / "out").exists()


def test_merge_seed_still_drives_dare(tmp_path):
    outs = []
    for seed in ("1", "2"):
        run("merge", "--method", "dare_linear", "--base", BASE, FT, "--weight", "1", "--density", "0.5", "--seed", seed,
            "-o", tmp_path / f"s{seed}.safetensors", "--quiet")
        outs.append(open(tmp_path / f"s{seed}.safetensors", "rb").read())
    assert outs[0] != outs[1]
