"""transformers loads what wtool writes and computes what the numpy forward pass predicts."""
import json, os, shutil
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from conftest import TINY, TOKENS, hf_logits, hf_generate, numpy_cfg, wtool
import rebasin_reference as ref

BASE, FT = os.path.join(TINY, "base"), os.path.join(TINY, "ft-a")


def weights(folder):
    import ml_dtypes  # noqa: F401
    return {k: v.astype(np.float32) for k, v in load_file(os.path.join(folder, "model.safetensors")).items()}


def test_the_numpy_forward_is_transformers_forward():
    """The yardstick itself: on the unmodified fixture both give the same logits."""
    np.testing.assert_allclose(hf_logits(BASE), ref.llama_logits(weights(BASE), np.array(TOKENS), numpy_cfg(BASE)), atol=2e-5)


@pytest.mark.parametrize("args", [["--method", "linear", BASE, FT, "--weight", "0.3,0.7"],
                                  ["--method", "ties", "--base", BASE, FT, FT, "--weight", "1,1", "--density", "0.5"]])
def test_merged_model(tmp_path, args):
    wtool("merge", *args, "-o", tmp_path / "m", "--quiet")
    np.testing.assert_allclose(hf_logits(tmp_path / "m"), ref.llama_logits(weights(tmp_path / "m"), np.array(TOKENS), numpy_cfg(BASE)), atol=2e-5)


def test_permuted_model_computes_what_b_computes(tmp_path):
    a, b = ref.llama_params(1), ref.llama_params(2)
    ref.save_llama(tmp_path / "a", a)
    ref.save_llama(tmp_path / "b", b)
    wtool("permute-match", "--reference", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out", "--quiet")
    tokens = [3, 17, 5, 42, 8, 0, 49, 21]
    got, want = hf_logits(tmp_path / "out", tokens), hf_logits(tmp_path / "b", tokens)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert not np.array_equal(weights(tmp_path / "out")["lm_head.weight"], b["lm_head.weight"])


@pytest.mark.parametrize("args", [["--method", "magnitude", "--sparsity", "0.5"], ["--nm", "2:4"]])
def test_pruned_model(tmp_path, args):
    wtool("prune-sparse", BASE, "-o", tmp_path / "p", *args, "--quiet")
    w = weights(tmp_path / "p")
    assert np.mean(w["model.layers.0.mlp.up_proj.weight"] == 0) >= 0.5
    np.testing.assert_allclose(hf_logits(tmp_path / "p"), ref.llama_logits(w, np.array(TOKENS), numpy_cfg(BASE)), atol=2e-5)


@pytest.mark.parametrize("target", ["mlp", "heads"])
def test_structured_pruning_loads_with_its_new_config(tmp_path, target):
    """The shrunk folder loads (new sizes) and computes what the original computes with the
    removed units zeroed: the numpy forward of the shrunk weights under the new config."""
    wtool("prune-sparse", BASE, "-o", tmp_path / "s", "--method", "structured", "--target", target, "--sparsity", "0.5", "--quiet")
    cfg = numpy_cfg(tmp_path / "s")
    assert (cfg["f"], cfg["kv"]) == ((32, 2) if target == "mlp" else (64, 1))
    np.testing.assert_allclose(hf_logits(tmp_path / "s"), ref.llama_logits(weights(tmp_path / "s"), np.array(TOKENS), cfg), atol=2e-5)


@pytest.mark.parametrize("args", [["--target", "layers", "--layers", "1"], ["--target", "hidden", "--sparsity", "0.25"],
                                  ["--target", "hidden", "--sparsity", "0.5", "--select", "uniform"], ["--target", "mlp", "--select", "uniform"]])
def test_width_and_depth_shrinking_load_in_transformers(tmp_path, args):
    """Fewer layers or residual channels: transformers loads the folder with its rewritten config
    (hidden_size, num_hidden_layers, explicit head_dim) and computes the numpy forward of it."""
    wtool("prune-sparse", BASE, "-o", tmp_path / "s", "--method", "structured", *args, "--quiet")
    cfg = numpy_cfg(tmp_path / "s")
    np.testing.assert_allclose(hf_logits(tmp_path / "s"), ref.llama_logits(weights(tmp_path / "s"), np.array(TOKENS), cfg), atol=2e-5)
    assert cfg["hd"] == numpy_cfg(BASE)["hd"]


def tied(tmp_path):
    d = tmp_path / "tied"
    shutil.copytree(os.path.join(TINY, "ft-bf16"), d)
    t = load_file(str(d / "model.safetensors"))
    del t["lm_head.weight"]
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.load(open(d / "config.json"))
    cfg["tie_word_embeddings"] = True
    json.dump(cfg, open(d / "config.json", "w"))
    return d


@pytest.mark.parametrize("scheme,extra", [("int4", ["--group-size", "32"]), ("int8", ["--granularity", "channel"]),
                                          ("fp8", ["--granularity", "channel"])])
@pytest.mark.parametrize("tie", [False, True])
def test_compressed_tensors_outputs_load_and_compute_the_fake_model(tmp_path, scheme, extra, tie):
    """transformers (with compressed-tensors) decompresses wtool's output; its logits and greedy
    tokens are those of wtool's fake-quantized model. Tied: lm_head exists only through tying."""
    src = tied(tmp_path) if tie else os.path.join(TINY, "ft-bf16")
    wtool("quantize", src, "-o", tmp_path / "ct", "--scheme", scheme, *extra, "--quiet")
    wtool("quantize", src, "-o", tmp_path / "fake", "--scheme", scheme, *extra, "--format", "fake", "--quiet")
    # As users load them: in the dtype the config declares (bf16), where compressed-tensors
    # decodes (q - zero) * scale in the scale's dtype, as wtool's fake output does: equal weights,
    # so equal logits and tokens.
    got, want = hf_logits(tmp_path / "ct", dtype="auto"), hf_logits(tmp_path / "fake", dtype="auto")
    np.testing.assert_array_equal(got, want)
    assert hf_generate(tmp_path / "ct", dtype="auto") == hf_generate(tmp_path / "fake", dtype="auto")


def test_converted_dtype_is_what_transformers_loads(tmp_path):
    """config.json says f16 after convert --dtype f16 (transformers 5 layout too), so the model
    loads as f16 without a cast."""
    import torch
    from transformers import AutoModelForCausalLM
    for layout in (4, 5):
        src = tmp_path / f"in{layout}"
        shutil.copytree(BASE, src)
        if layout == 5:
            cfg = json.load(open(src / "config.json"))
            cfg["dtype"] = cfg.pop("torch_dtype")
            json.dump(cfg, open(src / "config.json", "w"))
        wtool("convert", src, "-o", tmp_path / f"out{layout}", "--dtype", "f16", "--quiet")
        m = AutoModelForCausalLM.from_pretrained(str(tmp_path / f"out{layout}"), dtype="auto")
        assert m.dtype == torch.float16 and m.config.dtype == torch.float16
