#!/usr/bin/env python3
"""`make bench`, GGUF export: a generated ~1 GB bf16 LLaMA folder to an f16 GGUF and to Q4_K_M
(`quantize --llama-cpp`), next to gguf-py's writer doing convert_hf_to_gguf's f16 export
(gguf_py_export.py) and to the floor of reading the input and writing the output once. Prints
seconds, ratios and peak memory; never asserts a time. (Q4_K_M has no gguf-py peer: gguf-py has no
K-quant encoder; the per-type comparison with ggml's C quantizers is issue #19's.)"""
import json, os, sys
import numpy as np
from benchlib import standard_args, best, bf16_bytes, cleanup, floor, timed
from st_raw import write_raw

HERE = os.path.dirname(os.path.abspath(__file__))


def generate_folder(folder, total_bytes):
    if os.path.exists(os.path.join(folder, "model.safetensors")):
        return
    os.makedirs(folder, exist_ok=True)
    print(f"generating {folder} ...", flush=True)
    hidden, ffn, heads, kv, vocab = 2048, 5632, 32, 4, 32000
    per_layer = 2 * (2 * hidden * hidden + 2 * hidden * hidden // (heads // kv) + 3 * hidden * ffn)
    layers = max(1, int((total_bytes - 4 * vocab * hidden) // per_layer))
    rng = np.random.default_rng(3)
    t = {}
    def add(name, shape):
        t[name] = ("BF16", list(shape), bf16_bytes(rng.standard_normal(shape, dtype=np.float32) * 0.02) if len(shape) > 1
                   else bf16_bytes(np.ones(shape, np.float32)))
    add("model.embed_tokens.weight", (vocab, hidden)); add("lm_head.weight", (vocab, hidden)); add("model.norm.weight", (hidden,))
    for l in range(layers):
        p = f"model.layers.{l}."
        for n, s in [("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (hidden // (heads // kv), hidden)),
                     ("self_attn.v_proj", (hidden // (heads // kv), hidden)), ("self_attn.o_proj", (hidden, hidden)),
                     ("mlp.gate_proj", (ffn, hidden)), ("mlp.up_proj", (ffn, hidden)), ("mlp.down_proj", (hidden, ffn))]:
            add(p + n + ".weight", s)
        add(p + "input_layernorm.weight", (hidden,)); add(p + "post_attention_layernorm.weight", (hidden,))
    write_raw(os.path.join(folder, "model.safetensors"), t, metadata={"format": "pt"})
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": ffn,
               "num_attention_heads": heads, "num_key_value_heads": kv, "num_hidden_layers": layers, "rms_norm_eps": 1e-5,
               "rope_theta": 10000.0, "max_position_embeddings": 2048, "vocab_size": vocab, "tie_word_embeddings": False},
              open(os.path.join(folder, "config.json"), "w"))


def main():
    a = standard_args()
    folder = os.path.join(a.dir, "llama-bf16")
    generate_folder(folder, int(a.gb * 1e9))
    src = os.path.join(folder, "model.safetensors")
    size = os.path.getsize(src)
    out, peer = os.path.join(a.dir, "export.gguf"), os.path.join(a.dir, "peer.gguf")
    print(f"\nGGUF export of a {size / 1e9:.2f} GB bf16 LLaMA folder ({os.cpu_count()} cores), best of {a.repeat}:")
    print(f"{'job':<8} {'floor s':>8} {'wtool s':>8} {'gguf-py s':>10} {'vs floor':>9} {'vs gguf-py':>11} {'wtool MiB':>10} {'gguf-py MiB':>12}")
    for name, ratio in [("f16", 1.0), ("q4_k_m", 0.3)]:
        fl = min(floor([src], int(size * ratio), os.path.join(a.dir, "floor.bin")) for _ in range(a.repeat))
        t, rss = best(lambda: timed([a.wtool, "quantize", folder, "-o", out, "--scheme", name, "--llama-cpp", "--tokenizer", "none", "--quiet"]),
                      a.repeat, fresh=[out])
        if name == "f16":
            tp, rssp = best(lambda: timed([sys.executable, os.path.join(HERE, "gguf_py_export.py"), folder, peer]), a.repeat, fresh=[peer])
            print(f"{name:<8} {fl:>8.2f} {t:>8.2f} {tp:>10.2f} {t / fl:>8.2f}x {tp / t:>10.1f}x {rss:>10.0f} {rssp:>12.0f}")
        else:
            print(f"{name:<8} {fl:>8.2f} {t:>8.2f} {'-':>10} {t / fl:>8.2f}x {'-':>11} {rss:>10.0f} {'-':>12}")
        cleanup(out, peer)
    print("floor = cat of the input + dd of the output's size with fsync")


if __name__ == "__main__":
    main()
