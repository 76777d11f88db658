"""PEFT loads wtool's adapters, and its merge_and_unload equals `wtool lowrank-svd apply`."""
import os
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from conftest import TINY, hf_logits, wtool

BASE, FT = os.path.join(TINY, "base"), os.path.join(TINY, "ft-a")


def peft_merged(base, adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    m = PeftModel.from_pretrained(m, str(adapter))
    return {k: v.detach().numpy() for k, v in m.merge_and_unload().state_dict().items()}


@pytest.mark.parametrize("args", [["--rank", "4"], ["--rank", "8", "--split", "left", "--embeddings", "lora"], ["--energy", "0.9"]])
def test_extracted_adapter_merges_in_peft_like_wtool_apply(tmp_path, args):
    wtool("lowrank-svd", "extract", "--base", BASE, FT, "-o", tmp_path / "ad", *args, "--quiet")
    wtool("lowrank-svd", "apply", "--base", BASE, tmp_path / "ad", "-o", tmp_path / "merged", "--quiet")
    ours = load_file(str(tmp_path / "merged" / "model.safetensors"))
    theirs = peft_merged(BASE, tmp_path / "ad")
    assert set(theirs) == set(ours)
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=2e-6, err_msg=k)
    # and the adapter moved the base towards the fine-tune
    ft, base = load_file(os.path.join(FT, "model.safetensors")), load_file(os.path.join(BASE, "model.safetensors"))
    k = "model.layers.0.mlp.up_proj.weight"
    assert np.linalg.norm(ours[k] - ft[k]) < np.linalg.norm(base[k] - ft[k])


def test_pissa_residual_plus_adapter_is_the_original_in_peft(tmp_path):
    wtool("lowrank-svd", "pissa", BASE, "-o", tmp_path / "p", "--rank", "4", "--quiet")
    merged = peft_merged(tmp_path / "p", tmp_path / "p" / "pissa_adapter")
    base = load_file(os.path.join(BASE, "model.safetensors"))
    for k in base:
        np.testing.assert_allclose(merged[k], base[k], rtol=0, atol=2e-6, err_msg=k)
    assert np.isfinite(hf_logits(tmp_path / "p")).all()  # the residual model loads on its own too
