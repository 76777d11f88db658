#!/usr/bin/env python3
"""The peer of `wtool quantize --scheme f16 --llama-cpp` in make bench: what convert_hf_to_gguf does
with gguf-py's GGUFWriter for a LLaMA folder (names mapped, Q/K rows permuted, matrices to f16,
norms f32), tensor by tensor from safetensors' numpy reader. Usage: gguf_py_export.py FOLDER OUT."""
import json, os, sys
import numpy as np
import gguf
from benchlib import read_header

PARTS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
         "post_attention_layernorm": "ffn_norm"}


def gguf_name(name):
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    if name in top:
        return top[name]
    _, _, layer, rest = name.split(".", 3)
    part, suffix = rest.rsplit(".", 1)
    return f"blk.{layer}.{PARTS[part]}.{suffix}"


def permute(w, heads):
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main(folder, out):
    c = json.load(open(os.path.join(folder, "config.json")))
    w = gguf.GGUFWriter(out, "llama")
    w.add_block_count(c["num_hidden_layers"]); w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"]); w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"]); w.add_head_count_kv(c["num_key_value_heads"])
    w.add_rope_freq_base(c["rope_theta"]); w.add_layer_norm_rms_eps(c["rms_norm_eps"]); w.add_file_type(1)
    path = os.path.join(folder, "model.safetensors")
    header, start = read_header(path)
    raw = np.memmap(path, np.uint8, mode="r")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        assert info["dtype"] == "BF16"
        x = (np.frombuffer(raw[start + b:start + e], np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
        if name.endswith("q_proj.weight"):
            x = permute(x, c["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            x = permute(x, c["num_key_value_heads"])
        w.add_tensor(gguf_name(name), x if x.ndim == 1 else x.astype(np.float16))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
