"""Recipes written for mergekit run unchanged: model paths resolve against the current directory
first (mergekit hands them to the Hugging Face loader), the recipe's folder only as a fallback;
tokenizer_source; and --include/--exclude select what is merged (the rest is copied from the base)."""
import json, os, shutil, subprocess
import numpy as np
import pytest
from safetensors.numpy import load_file
from conftest import FIX, WTOOL

MK = f"{FIX}/mergekit"
LINEAR = """merge_method: linear
models:
  - model: {a}
    parameters: {{weight: 0.5}}
  - model: {b}
    parameters: {{weight: 0.5}}
dtype: float32
"""


def wtool(cwd, *args):
    return subprocess.run([WTOOL, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def mean_of(*paths):
    ts = [load_file(os.path.join(p, "model.safetensors")) for p in paths]
    return {k: (ts[0][k].astype(np.float64) * 0.5 + ts[1][k] * 0.5) for k in ts[0]}


def close(got, want):
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=k)


def project(tmp_path):
    """A mergekit user's layout: models/ beside configs/, run from the project folder."""
    root = tmp_path / "proj"
    (root / "configs").mkdir(parents=True)
    shutil.copytree(f"{MK}/models", root / "models")
    (root / "configs" / "x.yml").write_text(LINEAR.format(a="models/ft1", b="models/ft2"))
    return root


def test_recipe_in_a_subfolder_run_from_the_parent(tmp_path):
    root = project(tmp_path)
    r = wtool(root, "merge", "--config", "configs/x.yml", "-o", "out.safetensors", "--quiet")
    assert r.returncode == 0, r.stderr
    close(load_file(root / "out.safetensors"), mean_of(root / "models/ft1", root / "models/ft2"))
    rep = json.load(open(root / "out.report.json"))
    assert {m["reference"]: m["resolved_against"] for m in rep["parameters"]["models"]} == \
        {"models/ft1": "current directory", "models/ft2": "current directory"}


def test_recipe_folder_is_the_fallback_and_dry_run_says_which(tmp_path):
    root = project(tmp_path)
    # models only beside the recipe: the current directory has nothing under that name
    shutil.move(root / "models", root / "configs" / "models")
    r = wtool(root, "merge", "--config", "configs/x.yml", "-o", "out.safetensors", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "model models/ft1 -> configs/models/ft1 (recipe folder)" in r.stdout
    assert not (root / "out.safetensors").exists()


def test_both_exist_current_directory_wins_with_a_warning(tmp_path):
    root = project(tmp_path)
    # a different ft1 beside the recipe: mergekit would load ./models/ft1, so does wtool
    shutil.copytree(f"{MK}/models", root / "configs" / "models")
    shutil.rmtree(root / "configs" / "models" / "ft1")
    shutil.copytree(f"{MK}/models/ft3", root / "configs" / "models" / "ft1")
    r = wtool(root, "merge", "--config", "configs/x.yml", "-o", "out.safetensors")
    assert r.returncode == 0, r.stderr
    assert "exists both in the current directory and beside the recipe" in r.stderr
    close(load_file(root / "out.safetensors"), mean_of(root / "models/ft1", root / "models/ft2"))
    rep = json.load(open(root / "out.report.json"))
    assert any("models/ft1" in w and "mergekit" in w for w in rep["warnings"])


def test_missing_model_names_both_places_and_writes_nothing(tmp_path):
    root = project(tmp_path)
    (root / "configs" / "x.yml").write_text(LINEAR.format(a="models/nope", b="models/ft2"))
    r = wtool(root, "merge", "--config", "configs/x.yml", "-o", "out")
    assert r.returncode == 2
    assert "models/nope" in r.stderr and "configs/models/nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (root / "out").exists()


def test_tokenizer_source(tmp_path):
    root = project(tmp_path)
    tok = root / "tok"
    tok.mkdir()
    (tok / "tokenizer_config.json").write_text('{"model_max_length": 77}')
    (tok / "special_tokens_map.json").write_text('{"bos_token": "<s>"}')
    recipe = LINEAR.format(a="models/ft1", b="models/ft2") + "tokenizer_source: tok\n"
    (root / "configs" / "t.yml").write_text(recipe)
    r = wtool(root, "merge", "--config", "configs/t.yml", "-o", "out", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.load(open(root / "out/tokenizer_config.json")) == {"model_max_length": 77}
    assert (root / "out/special_tokens_map.json").exists()
    assert json.load(open(root / "out/config.json"))["model_type"] == "llama"   # config from the models
    (root / "afile").write_text("x")
    for bad, needle in (("union", "union is not supported"), ("nowhere", "no such local file"), ("afile", "is not a model folder")):
        (root / "configs" / "u.yml").write_text(LINEAR.format(a="models/ft1", b="models/ft2") + f"tokenizer_source: {bad}\n")
        r = wtool(root, "merge", "--config", "configs/u.yml", "-o", "out2")
        assert r.returncode == 2 and needle in r.stderr, r.stderr
        assert not (root / "out2").exists()


@pytest.mark.parametrize("opts", [["--include", "*.mlp.*"], ["--exclude", "*.mlp.*"]])
def test_include_exclude_merge_only_the_selection(tmp_path, opts):
    out = tmp_path / "o.safetensors"
    r = subprocess.run([WTOOL, "merge", "--method", "task_arithmetic", "--base", f"{MK}/models/base",
                        f"{MK}/models/ft1", f"{MK}/models/ft2", "--weight", "0.5", "-o", out, "--quiet", *opts],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    base, got = load_file(f"{MK}/models/base/model.safetensors"), load_file(out)
    f1, f2 = load_file(f"{MK}/models/ft1/model.safetensors"), load_file(f"{MK}/models/ft2/model.safetensors")
    rows = {x["name"]: x for x in json.load(open(tmp_path / "o.report.json"))["tensors"]}
    merged = 0
    for k, b in base.items():
        selected = (".mlp." in k) == (opts[0] == "--include")
        if selected:
            want = b.astype(np.float64) + 0.5 * (f1[k] - b.astype(np.float64)) + 0.5 * (f2[k] - b.astype(np.float64))
            np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=1e-6, err_msg=k)
            assert "copied_from" not in rows[k]
            merged += 1
        else:
            assert got[k].tobytes() == b.tobytes(), k
            assert rows[k]["reason"] == "excluded"
    assert 0 < merged < len(base)


def test_include_that_matches_nothing_is_reported(tmp_path):
    out = tmp_path / "o.safetensors"
    r = subprocess.run([WTOOL, "merge", "--method", "linear", f"{MK}/models/ft1", f"{MK}/models/ft2",
                        "--weight", "0.5", "-o", out, "--include", "*.nothing.*"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "pattern '*.nothing.*' matches no tensor" in r.stderr
