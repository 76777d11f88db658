"""Checkpoints written by the real torch.save (and huggingface_hub's sharder), read by wtool's
pickle reader: every tensor equals what torch.load(weights_only=True) gives, and a hostile pickle
is refused by wtool without its payload running."""
import json, os

import numpy as np
import pytest

from conftest import wtool, TINY, hf_logits
from st_raw import read_raw


def torch_bytes(t):
    import torch
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return t.view(torch.uint8).numpy().tobytes()
    if t.dtype in (torch.uint16, torch.uint32):
        return t.view(torch.int16 if t.dtype == torch.uint16 else torch.int32).numpy().tobytes()
    return t.numpy().tobytes()


def assert_same(out, path):
    import torch
    ref = torch.load(path, weights_only=True, mmap=True)
    got = read_raw(out)
    assert sorted(got) == sorted(ref)
    for k, t in ref.items():
        assert got[k][1] == list(t.shape), k
        assert got[k][2] == torch_bytes(t), k


def test_every_dtype_view_and_shared_storage(tmp_path):
    import torch
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    sd = {
        "f32": base, "f64": torch.randn(3, 2, dtype=torch.float64, generator=g),
        "f16": torch.randn(5, generator=g).half(), "bf16": torch.randn(2, 5, generator=g).bfloat16(),
        "i64": torch.arange(-3, 3).reshape(2, 3), "i32": torch.arange(4, dtype=torch.int32),
        "i16": torch.arange(4, dtype=torch.int16), "i8": torch.arange(-2, 2, dtype=torch.int8),
        "u8": torch.arange(4, dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
        "view": base[1:3, 2:5], "transposed": base.t(), "expanded": torch.arange(4.0).expand(3, 4),
        "scalar": torch.tensor(7.0), "empty": torch.zeros(0, 4),
        "f8": torch.randn(4, 4, generator=g).to(torch.float8_e4m3fn),
        "f8b": torch.randn(4, generator=g).to(torch.float8_e5m2),
        "u16": torch.arange(10, dtype=torch.int32).to(torch.uint16)[3:], "u32": torch.arange(5, dtype=torch.int64).to(torch.uint32),
        "param": torch.nn.Parameter(torch.ones(3)),
    }
    shared = torch.arange(15.0)
    sd["shared_a"], sd["shared_b"] = shared, shared[5:]
    path = str(tmp_path / "sd.bin")
    torch.save(sd, path)
    out = str(tmp_path / "sd.safetensors")
    wtool("convert", path, "-o", out, "--quiet")
    assert_same(out, path)


def test_module_state_dict_and_large_memo(tmp_path):
    import torch
    m = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(40)])
    path = str(tmp_path / "m.bin")
    torch.save(m.state_dict(), path)     # OrderedDict + BUILD(_metadata), LONG_BINPUT past 256
    out = str(tmp_path / "m.safetensors")
    wtool("convert", path, "-o", out, "--quiet")
    assert_same(out, path)


def test_training_checkpoint_with_an_object_is_refused_naming_it(tmp_path):
    import argparse, torch
    path = str(tmp_path / "ckpt.bin")
    torch.save({"state_dict": {"w": torch.ones(2)}, "args": argparse.Namespace(lr=1e-3)}, path)
    r = wtool("inspect", path, check=False)
    assert r.returncode == 1 and "'argparse.Namespace'" in r.stderr


def test_malicious_pickle_in_a_real_archive(tmp_path):
    import torch
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = str(tmp_path / "evil.bin")
    torch.save({"w": torch.ones(2), "x": Evil()}, path)
    # torch's own safe loader refuses it too
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    assert not marker.exists()
    r = wtool("convert", path, "-o", str(tmp_path / "out"), check=False)
    assert r.returncode == 1 and "posix.system" in r.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_sharded_hf_folder_loads_and_converts_like_transformers(tmp_path):
    """A tiny LLaMA saved as pytorch_model-0000k-of-0000n.bin by huggingface_hub: wtool's safetensors
    copy gives transformers' logits of the .bin folder exactly."""
    import torch
    from huggingface_hub import save_torch_state_dict
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(os.path.join(TINY, "base"), dtype=torch.float32)
    src = tmp_path / "bin"
    src.mkdir()
    save_torch_state_dict(m.state_dict(), str(src), max_shard_size="20KB", safe_serialization=False)
    for f in os.listdir(os.path.join(TINY, "base")):
        if f.endswith(".json") and f != "model.safetensors.index.json":
            open(src / f, "w").write(open(os.path.join(TINY, "base", f)).read())
    assert os.path.exists(src / "pytorch_model.bin.index.json")
    out = tmp_path / "st"
    wtool("convert", str(src), "-o", str(out), "--quiet")
    a = hf_logits(src)
    b = hf_logits(out)
    np.testing.assert_array_equal(a, b)


def test_atlas_coefficients_saved_by_torch(tmp_path):
    """aTLAS's learned_additions.pt as its code writes it (torch.save of a [T, P] tensor) drives
    task-vector apply exactly like the same numbers in wtool's JSON."""
    import torch
    from conftest import FIX
    base = os.path.join(FIX, "tiny-llama", "base")
    fts = [os.path.join(FIX, "tiny-llama", "ft-a"), os.path.join(FIX, "tiny-llama", "ft-bf16")]
    names = sorted(read_raw(os.path.join(base, "model.safetensors")))
    coef = torch.rand(2, len(names), generator=torch.Generator().manual_seed(1)) * 2 - 0.5
    torch.save(coef, tmp_path / "learned_additions.pt")
    (tmp_path / "order.txt").write_text("\n".join(names))
    json.dump({"blocks": names, "coefficients": coef.double().tolist()}, open(tmp_path / "c.json", "w"))
    for name, extra in [("pt", ["--coefficients", tmp_path / "learned_additions.pt", "--block-order", tmp_path / "order.txt"]),
                        ("json", ["--coefficients", tmp_path / "c.json"])]:
        wtool("task-vector", "apply", "--base", base, *fts, "--inputs", "model", *extra, "-o", tmp_path / name, "--quiet")
    assert read_raw(str(tmp_path / "pt" / "model.safetensors")) == read_raw(str(tmp_path / "json" / "model.safetensors"))
