"""compressed-tensors' own decompressor rebuilds wtool's pack-quantized outputs (symmetric,
asymmetric, HQQ; 2 to 8 bits) exactly as wtool's fake output."""
import json, os
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from conftest import FIX, TINY, wtool

QUANT = os.path.join(FIX, "quant", "weights-bf16.safetensors")


def decompress(folder):
    """Every quantized module through PackedQuantizationCompressor.decompress with the scheme its
    config.json declares."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationConfig
    files = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    cfg = json.load(open(os.path.join(folder, "config.json")))["quantization_config"] if os.path.exists(os.path.join(folder, "config.json")) \
        else json.loads(__import__("safetensors").safe_open(os.path.join(folder, files[0]), "pt").metadata()["quantization_config"])
    scheme = QuantizationConfig.model_validate(cfg).config_groups["group_0"]
    sd = {}
    for f in files:
        sd.update(load_file(os.path.join(folder, f)))
    out = {}
    for k in [k for k in sd if k.endswith(".weight_packed")]:
        prefix = k[: -len("weight_packed")]
        local = {n[len(prefix):]: v for n, v in sd.items() if n.startswith(prefix) and n[len(prefix):].startswith("weight_")}
        out[prefix + "weight"] = PackedQuantizationCompressor.decompress(local, scheme)["weight"]
    return out


@pytest.mark.parametrize("scheme,args", [("int4", []), ("int4", ["--asymmetric"]), ("int3", ["--asymmetric"]), ("int8", ["--asymmetric"]),
                                         ("hqq4", []), ("hqq3", []), ("hqq2", []), ("statsq4", []), ("statsq3", []), ("statsq2", [])])
def test_decompressor_rebuilds_the_fake_output(tmp_path, scheme, args):
    src = os.path.join(TINY, "ft-bf16") if scheme.startswith(("int", "statsq")) else QUANT
    g = ["--group-size", "32"] if scheme.startswith("int") else [] if scheme.startswith("statsq") else ["--group-size", "64"]
    out_ct, out_fake = tmp_path / "ct", tmp_path / "fake"
    wtool("quantize", src, "-o", out_ct, "--scheme", scheme, *g, *args, "--quiet")
    wtool("quantize", src, "-o", out_fake, "--scheme", scheme, *g, *args, "--format", "fake", "--quiet")
    got = decompress(str(out_ct))
    fake = load_file(str(out_fake / "model.safetensors"))
    assert got
    for k, w in got.items():
        assert w.dtype == fake[k].dtype and torch.equal(w, fake[k]), k
