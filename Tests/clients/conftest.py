"""The real consumers of wtool's outputs (torch, transformers, PEFT, compressed-tensors,
llama.cpp through llama-cpp-python), run by `make test-clients` in their own pinned virtual
environment (Tests/clients/requirements.txt). Not part of `make test` / CI: torch alone is GBs."""
import json, os, subprocess, sys
import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIX = os.path.join(ROOT, "Fixtures")
TINY = os.path.join(FIX, "tiny-llama")
sys.path.insert(0, os.path.join(ROOT, "Tests", "interop"))
sys.path.insert(0, FIX)
WTOOL = os.environ.get("WTOOL", os.path.join(ROOT, ".build", "debug", "wtool"))
TOKENS = [3, 17, 5, 42, 8, 0, 49, 21, 13, 7, 60, 2]


def wtool(*args, check=True):
    r = subprocess.run([WTOOL, *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"wtool {' '.join(map(str, args))} -> {r.returncode}: {r.stderr}")
    return r


def numpy_cfg(folder):
    """rebasin_reference's LLaMA forward configuration, from a config.json."""
    c = json.load(open(os.path.join(folder, "config.json")))
    heads = c["num_attention_heads"]
    theta = c.get("rope_theta") or c.get("rope_parameters", {}).get("rope_theta")
    return dict(vocab=c["vocab_size"], d=c["hidden_size"], heads=heads, kv=c.get("num_key_value_heads", heads),
                hd=c.get("head_dim") or c["hidden_size"] // heads, f=c["intermediate_size"],
                layers=c["num_hidden_layers"], theta=theta, eps=c["rms_norm_eps"])


def hf_logits(folder, tokens=TOKENS, dtype="float32"):
    """transformers' logits for a model folder, in f64 numpy (the model runs in f32, or with
    dtype="auto" in the dtype its config declares)."""
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype) if dtype != "auto" else "auto")
    m.eval()
    with torch.no_grad():
        return m(torch.tensor([tokens])).logits[0].double().numpy()


def hf_generate(folder, prompt=TOKENS[:4], n=12, dtype="float32"):
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype) if dtype != "auto" else "auto")
    with torch.no_grad():
        out = m.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0].tolist()


@pytest.fixture(scope="session", autouse=True)
def wtool_binary():
    assert os.access(WTOOL, os.X_OK), f"no wtool binary at {WTOOL}: run 'make build' first"
