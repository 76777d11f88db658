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


@pytest.mark.parametrize("args", [["--rank", "4"], ["--rank", "8", "--split", "left", "--embeddings", "lora"], ["--energy", "0.9"],
                                  ["--rank", "4", "--format", "dora"], ["--rank", "6", "--format", "dora", "--embeddings", "lora"],
                                  # every matrix through the randomized SVD's products (wtool's own kernels on AVX-512)
                                  ["--rank", "4", "--svd", "randomized"]])
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


def test_pickled_adapter_bin_applies_like_its_safetensors(tmp_path):
    """An adapter saved the old way (adapter_model.bin, torch.save): lowrank-svd apply reads it
    through the safe pickle reader and merges exactly what the safetensors adapter gives."""
    import shutil
    wtool("lowrank-svd", "extract", "--base", BASE, FT, "-o", tmp_path / "ad", "--rank", "4", "--quiet")
    wtool("lowrank-svd", "apply", "--base", BASE, tmp_path / "ad", "-o", tmp_path / "m1", "--quiet")
    shutil.copytree(tmp_path / "ad", tmp_path / "bin")
    sd = {k: torch.from_numpy(v) for k, v in load_file(str(tmp_path / "ad" / "adapter_model.safetensors")).items()}
    os.remove(tmp_path / "bin" / "adapter_model.safetensors")
    torch.save(sd, tmp_path / "bin" / "adapter_model.bin")
    wtool("lowrank-svd", "apply", "--base", BASE, tmp_path / "bin", "-o", tmp_path / "m2", "--quiet")
    a, b = load_file(str(tmp_path / "m1" / "model.safetensors")), load_file(str(tmp_path / "m2" / "model.safetensors"))
    assert set(a) == set(b) and all(a[k].tobytes() == b[k].tobytes() for k in a)
    theirs = peft_merged(BASE, tmp_path / "bin")
    for k in b:
        np.testing.assert_allclose(b[k], theirs[k], rtol=0, atol=2e-6, err_msg=k)


def _peft_adapter(tmp_path, config, perturb):
    """A PEFT adapter of `config` on the tiny LLaMA with random trainable values, saved."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)
    pm = get_peft_model(m, config)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad and perturb(n):
                p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if "magnitude" in n else 0.0) * p)
    pm.save_pretrained(str(tmp_path / "ad"))
    return tmp_path / "ad"


@pytest.mark.parametrize("name", ["dora", "dora-embedding", "miss", "miss-bat", "miss-mini", "fourierft"])
def test_adapter_types_merge_like_peft(tmp_path, name):
    """DoRA, MiSS (default, bat, mini) and FourierFT: wtool's apply equals PEFT's merge_and_unload."""
    from peft import LoraConfig, MissConfig, FourierFTConfig
    cfgs = {
        "dora": (LoraConfig(r=4, lora_alpha=8, use_dora=True, init_lora_weights=False, target_modules=["q_proj", "v_proj", "up_proj"]), lambda n: "lora_" in n),
        "dora-embedding": (LoraConfig(r=4, lora_alpha=4, use_dora=True, init_lora_weights=False, target_modules=["embed_tokens", "down_proj"]), lambda n: "lora_" in n),
        "miss": (MissConfig(r=16, target_modules=["q_proj", "up_proj"]), lambda n: "miss_" in n),
        "miss-bat": (MissConfig(r=8, init_weights="bat", target_modules=["q_proj", "o_proj"]), lambda n: "miss_" in n),
        "miss-mini": (MissConfig(r=16, mini_r=8, init_weights="mini", target_modules=["q_proj", "up_proj"]), lambda n: "miss_" in n),
        "fourierft": (FourierFTConfig(n_frequency=60, scaling=20.0, random_loc_seed=777, n_frequency_pattern={"v_proj": 25},
                                      target_modules=["q_proj", "v_proj", "down_proj"]), lambda n: "fourierft_" in n),
    }
    config, perturb = cfgs[name]
    ad = _peft_adapter(tmp_path, config, perturb)
    wtool("lowrank-svd", "apply", "--base", BASE, ad, "-o", tmp_path / "merged", "--quiet")
    ours = load_file(str(tmp_path / "merged" / "model.safetensors"))
    theirs = peft_merged(BASE, ad)
    base = load_file(os.path.join(BASE, "model.safetensors"))
    changed = 0
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=2e-6, atol=2e-6, err_msg=k)
        changed += not np.array_equal(ours[k], base[k])
    assert changed >= 2
