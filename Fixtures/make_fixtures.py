#!/usr/bin/env python3
"""Regenerates every fixture in this folder, byte for byte (numpy + safetensors, pinned in
requirements.txt). Run from anywhere: `python3 Fixtures/make_fixtures.py`.

  tiny-llama/base         a LLaMA-architecture model (f32, hidden 32, 2 layers, GQA 4/2 heads)
  tiny-llama/ft-a         a fine-tune of base (f32, single file)
  tiny-llama/ft-sharded   another fine-tune, in 3 shards + model.safetensors.index.json
  tiny-llama/ft-bf16      ft-a stored as bf16 (round to nearest even)
  edge/*.safetensors      valid edge cases the reader must load (zero-size, scalar, empty, ...)
  dtypes.safetensors      one tensor of every numeric dtype, written by the Python writer
  mergekit/                mergekit's recipes, inputs and outputs (copied from the shared goldens)
  malformed/*             invalid files and folders, each with the problem it must report
                          (malformed/expected.json: file -> substring of wtool's message)
"""
import json, os, shutil, struct, sys
import numpy as np
import ml_dtypes
from safetensors.numpy import save_file
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_raw import write_raw  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

def fresh(path):
    if os.path.isdir(path): shutil.rmtree(path)
    os.makedirs(path)

# ---------------------------------------------------------------- tiny LLaMA
HIDDEN, INTER, LAYERS, VOCAB, HEADS, KV = 32, 64, 2, 64, 4, 2

def llama_shapes():
    hd = HIDDEN // HEADS
    s = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        s.update({p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (KV * hd, HIDDEN),
                  p + "self_attn.v_proj.weight": (KV * hd, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                  p + "mlp.gate_proj.weight": (INTER, HIDDEN), p + "mlp.up_proj.weight": (INTER, HIDDEN),
                  p + "mlp.down_proj.weight": (HIDDEN, INTER), p + "input_layernorm.weight": (HIDDEN,),
                  p + "post_attention_layernorm.weight": (HIDDEN,)})
    s["model.norm.weight"] = (HIDDEN,)
    s["lm_head.weight"] = (VOCAB, HIDDEN)
    return s

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
          "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
          "num_key_value_heads": KV, "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "max_position_embeddings": 128, "tie_word_embeddings": False, "torch_dtype": "float32"}

def write_aux(d, dtype="float32"):
    cfg = dict(CONFIG, torch_dtype=dtype)
    with open(os.path.join(d, "config.json"), "w") as f: json.dump(cfg, f, indent=2, sort_keys=True); f.write("\n")
    with open(os.path.join(d, "generation_config.json"), "w") as f: json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2); f.write("\n")
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f: json.dump({"model_max_length": 128}, f, indent=2); f.write("\n")

def finetune(base, rng):
    out = {}
    for n, w in base.items():
        if w.ndim == 1:
            out[n] = (w + 0.02 * rng.standard_normal(w.shape)).astype(np.float32)
            continue
        r, c = w.shape
        low = rng.standard_normal((r, 2)) @ rng.standard_normal((2, c)) * 0.05 / np.sqrt(c)
        spikes = (rng.random(w.shape) < 0.01) * rng.standard_normal(w.shape) * 0.2
        out[n] = (w + low + spikes + 0.002 * rng.standard_normal(w.shape)).astype(np.float32)
    return out

def tiny_llama():
    root = os.path.join(HERE, "tiny-llama")
    fresh(root)
    rng = np.random.default_rng(20261124)
    base = {}
    for n, s in llama_shapes().items():
        base[n] = ((1.0 + 0.1 * rng.standard_normal(s)) if len(s) == 1 else rng.standard_normal(s) / np.sqrt(s[1])).astype(np.float32)
    ft_a, ft_b = finetune(base, rng), finetune(base, rng)
    for name, tensors in (("base", base), ("ft-a", ft_a)):
        d = os.path.join(root, name); os.makedirs(d)
        save_file(tensors, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        write_aux(d)
    # Sharded like Hugging Face: greedy split in model order, 5-digit names, sorted index.
    d = os.path.join(root, "ft-sharded"); os.makedirs(d)
    names = list(ft_b)
    groups = [names[:8], names[8:16], names[16:]]
    weight_map = {}
    for k, g in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: ft_b[n] for n in g}, os.path.join(d, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in g})
    index = {"metadata": {"total_size": sum(t.nbytes for t in ft_b.values())}, "weight_map": weight_map}
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    write_aux(d)
    # bf16 through ml_dtypes (round to nearest even), written with the raw-bytes API.
    d = os.path.join(root, "ft-bf16"); os.makedirs(d)
    raw = {n: ("BF16", t.shape, t.astype(ml_dtypes.bfloat16).tobytes()) for n, t in ft_a.items()}
    write_raw(os.path.join(d, "model.safetensors"), raw, metadata={"format": "pt"})
    write_aux(d, "bfloat16")

# ---------------------------------------------------------------- every dtype, edge cases
def dtypes_file():
    rng = np.random.default_rng(7)
    vals = np.concatenate([rng.standard_normal(40) * 3, [0.0, -0.0, 1e-8, -1e-8, 65504, 70000, 1e30, -1e30, np.inf, -np.inf, np.nan]]).astype(np.float64)
    raw = {
        "f64": ("F64", [51], vals.tobytes()),
        "f32": ("F32", [3, 17], vals.astype(np.float32).tobytes()),
        "f16": ("F16", [51], vals.astype(np.float16).tobytes()),
        "bf16": ("BF16", [51], vals.astype(ml_dtypes.bfloat16).tobytes()),
        "f8_e4m3": ("F8_E4M3", [40], vals[:40].astype(ml_dtypes.float8_e4m3fn).tobytes()),
        "f8_e5m2": ("F8_E5M2", [40], vals[:40].astype(ml_dtypes.float8_e5m2).tobytes()),
        "i64": ("I64", [4], np.array([-2**62, -1, 0, 2**62], np.int64).tobytes()),
        "u64": ("U64", [3], np.array([0, 1, 2**63], np.uint64).tobytes()),
        "i32": ("I32", [3], np.array([-7, 0, 2**31 - 1], np.int32).tobytes()),
        "u32": ("U32", [2], np.array([0, 2**32 - 1], np.uint32).tobytes()),
        "i16": ("I16", [2], np.array([-32768, 32767], np.int16).tobytes()),
        "u16": ("U16", [2], np.array([0, 65535], np.uint16).tobytes()),
        "i8": ("I8", [2, 2], np.array([-128, -1, 0, 127], np.int8).tobytes()),
        "u8": ("U8", [3], np.array([0, 1, 255], np.uint8).tobytes()),
        "bool": ("BOOL", [3], np.array([True, False, True]).tobytes()),
    }
    write_raw(os.path.join(HERE, "dtypes.safetensors"), raw, metadata={"format": "pt"})

def header_file(path, header, payload=b"", raw_header=None, n=None):
    """A file from a header (dict, or raw bytes), a payload, and optionally a forced length N."""
    h = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h) if n is None else n) + h + payload)

def edge_cases():
    d = os.path.join(HERE, "edge"); fresh(d)
    z16 = bytes(16)
    t = lambda dt, sh, b, e: {"dtype": dt, "shape": sh, "data_offsets": [b, e]}
    header_file(f"{d}/n-not-multiple-of-8.safetensors", {"t": t("F32", [2, 2], 0, 16)}, z16)
    header_file(f"{d}/leading-whitespace.safetensors", None, z16, raw_header=b'  {"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    header_file(f"{d}/extra-field.safetensors", {"t": dict(t("F32", [2, 2], 0, 16), foo=1)}, z16)
    header_file(f"{d}/metadata-null.safetensors", {"__metadata__": None, "t": t("F32", [2, 2], 0, 16)}, z16)
    header_file(f"{d}/only-metadata.safetensors", {"__metadata__": {"k": "v"}})
    header_file(f"{d}/order-differs.safetensors", {"b": t("F32", [2], 8, 16), "a": t("F32", [2], 0, 8)},
                struct.pack("<4f", 1, 2, 3, 4))
    header_file(f"{d}/zero-size.safetensors", {"z": t("F32", [2, 0], 0, 0), "s": t("F32", [], 0, 4),
                                               "w": t("I8", [0, 18446744073709551615], 4, 4), "v": t("F16", [0], 4, 4)},
                struct.pack("<f", 2.5))
    header_file(f"{d}/empty.safetensors", {})
    header_file(f"{d}/unicode-names.safetensors", None, struct.pack("<2f", 1, 2),
                raw_header='{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a\\u00e9\u4e2d":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'.encode())
    header_file(f"{d}/bool-values.safetensors", {"b": t("BOOL", [2], 0, 2)}, bytes([2, 5]))
    header_file(f"{d}/unaligned.safetensors", None, bytes(range(2, 7)) + struct.pack("<4e", 1, -2, 0.5, 65504),
                raw_header=b'{"a":{"dtype":"U8","shape":[5],"data_offsets":[0,5]},"h":{"dtype":"F16","shape":[4],"data_offsets":[5,13]}}')

def malformed():
    d = os.path.join(HERE, "malformed"); fresh(d)
    z16 = bytes(16)
    t = lambda dt, sh, b, e: {"dtype": dt, "shape": sh, "data_offsets": [b, e]}
    ok = lambda: {"t": t("F32", [2, 2], 0, 16)}
    expected = {}
    def case(name, expect, header=None, payload=z16, raw=None, n=None):
        header_file(f"{d}/{name}.safetensors", header, payload, raw, n)
        expected[f"{name}.safetensors"] = expect
    with open(f"{d}/too-small.safetensors", "wb") as f: f.write(b"\x01\x02\x03")
    expected["too-small.safetensors"] = "header too small"
    case("header-too-large", "header too large", ok(), n=100_000_001)
    case("header-past-eof", "invalid header length", ok(), n=100)
    case("n-zero", "invalid JSON", raw=b"", payload=b"")
    case("bad-utf8", "invalid UTF-8", raw=b'{"t\xff":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    case("truncated-json", "invalid JSON", raw=b'{"t":')
    case("header-array", "expected an object", raw=b"[]")
    case("entry-not-object", "expected an object with dtype", raw=b'{"t":5}')
    case("bom", "invalid JSON", raw=b'\xef\xbb\xbf{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    case("comment", "invalid JSON", raw=b'/*c*/{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    case("nul-padding", "invalid JSON", raw=b'{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}\x00\x00')
    case("dtype-unknown", "unknown dtype 'F128'", {"t": t("F128", [2, 2], 0, 16)})
    case("dtype-lowercase", "unknown dtype 'f32'", {"t": t("f32", [2, 2], 0, 16)})
    case("missing-shape", "missing field `shape`", {"t": {"dtype": "F32", "data_offsets": [0, 16]}})
    case("shape-negative", "not an integer", raw=b'{"t":{"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]}}')
    case("shape-float", "not an integer", raw=b'{"t":{"dtype":"F32","shape":[2.0,2],"data_offsets":[0,16]}}')
    case("shape-exponent", "not an integer", raw=b'{"t":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}')
    case("offsets-three", "data_offsets must be an array of two", raw=b'{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8,16]}}')
    case("offsets-huge", "data_offsets entries must be integers", raw=b'{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,18446744073709551616]}}')
    case("metadata-number", "__metadata__", raw=b'{"__metadata__":{"k":1},"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    case("metadata-nested", "__metadata__", raw=b'{"__metadata__":{"k":{"a":"b"}},"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    case("metadata-twice", "duplicate field `__metadata__`", raw=b'{"__metadata__":{},"__metadata__":{},"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    case("duplicate-name", "names this tensor twice", raw=b'{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    case("duplicate-name-offsets", "names this tensor twice", raw=b'{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"t":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}')
    case("gap", "invalid offset", {"a": t("F32", [4], 0, 16), "b": t("F32", [4], 20, 36)}, bytes(36))
    case("overlap", "invalid offset", {"a": t("F32", [4], 0, 16), "b": t("F32", [4], 8, 24)}, bytes(24))
    case("not-at-zero", "invalid offset", {"t": t("F32", [2, 2], 4, 20)}, bytes(20))
    case("end-before-begin", "invalid offset", {"t": t("F32", [0], 8, 0)}, bytes(8))
    case("trailing-byte", "incomplete file", ok(), bytes(17))
    case("truncated-data", "incomplete file", ok(), bytes(15))
    case("size-mismatch", "needs 24 bytes", {"t": t("F32", [2, 3], 0, 16)})
    case("shape-overflow", "overflow", {"t": t("F32", [2**62, 8], 0, 16)})
    case("f4-odd", "byte boundary", {"t": t("F4", [3], 0, 2)}, bytes(2))
    case("zero-size-after-eof", "invalid offset", {"a": t("F32", [1], 0, 4), "z": t("F32", [0], 8, 8)}, bytes(4))
    case("lone-surrogate", "lone surrogate", raw=b'{"\\ud800":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    case("metadata-as-tensor", "__metadata__", raw=b'{"__metadata__":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}')
    with open(f"{d}/lfs-pointer.safetensors", "w") as f:
        f.write("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")
    expected["lfs-pointer.safetensors"] = "Git LFS pointer"
    # Broken sharded folders.
    good = {"a": np.ones(4, np.float32), "b": np.zeros(2, np.float32)}
    def folder(name, shards, index, expect):
        p = os.path.join(d, name); os.makedirs(p)
        for fname, tensors in shards.items(): save_file(tensors, os.path.join(p, fname), metadata={"format": "pt"})
        with open(os.path.join(p, "model.safetensors.index.json"), "w") as f: f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
        expected[name] = expect
    s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    folder("index-missing-shard", {s1: {"a": good["a"]}}, {"metadata": {"total_size": 24}, "weight_map": {"a": s1, "b": s2}}, "which is missing")
    folder("index-absent-tensor", {s1: {"a": good["a"]}, s2: {"b": good["b"]}},
           {"metadata": {"total_size": 28}, "weight_map": {"a": s1, "b": s2, "c": s2}}, "has no such tensor")
    folder("tensor-in-two-shards", {s1: {"a": good["a"]}, s2: {"a": good["a"], "b": good["b"]}},
           {"metadata": {"total_size": 24}, "weight_map": {"a": s1, "b": s2}}, "also stored in shard")
    folder("shard-truncated", {s1: {"a": good["a"]}, s2: {"b": good["b"]}},
           {"metadata": {"total_size": 24}, "weight_map": {"a": s1, "b": s2}}, "incomplete file")
    with open(os.path.join(d, "shard-truncated", s2), "r+b") as f: f.truncate(os.path.getsize(f.name) - 1)
    with open(f"{d}/expected.json", "w") as f: f.write(json.dumps(expected, indent=2, sort_keys=True) + "\n")

def mergekit_goldens():
    """mergekit's reference outputs (mergekit 0.1.5, torch on CPU; see mergekit/README.md) cannot be
    made without mergekit and torch: they are copied from the shared goldens when present."""
    src = os.path.join(HERE, "..", "..", "shared", "goldens", "mergekit")
    if not os.path.isdir(src):
        print("shared/goldens/mergekit not found: keeping Fixtures/mergekit as committed")
        return
    dst = os.path.join(HERE, "mergekit")
    for sub in ("models", "outputs"):
        if os.path.isdir(os.path.join(dst, sub)): shutil.rmtree(os.path.join(dst, sub))
        shutil.copytree(os.path.join(src, sub), os.path.join(dst, sub))
    for name in sorted(os.listdir(os.path.join(src, "configs"))):
        shutil.copy(os.path.join(src, "configs", name), os.path.join(dst, name))

def quant_weights():
    """Weight matrices for `wtool quantize`: Gaussian, Laplace and Student-t(3) rows (the heavy
    tails are where HQQ's robust zero points pay), a bf16 copy, a row length that no block of 32
    divides, plus a norm vector and an embedding that the default selection keeps."""
    rng = np.random.default_rng(11)
    d = os.path.join(HERE, "quant")
    os.makedirs(d, exist_ok=True)
    w = {
        "model.layers.0.mlp.up_proj.weight": (0.02 * rng.standard_normal((128, 512))).astype(np.float32),
        "model.layers.0.mlp.down_proj.weight": (0.02 * rng.laplace(size=(128, 512))).astype(np.float32),
        "model.layers.0.self_attn.o_proj.weight": (0.02 * rng.standard_t(3, size=(128, 512))).astype(np.float32),
        "model.layers.0.self_attn.odd_proj.weight": rng.standard_normal((16, 100)).astype(np.float32),
        "model.layers.0.input_layernorm.weight": np.ones(512, np.float32),
        "model.embed_tokens.weight": rng.standard_normal((64, 512)).astype(np.float32),
    }
    save_file(w, os.path.join(d, "weights.safetensors"), metadata={"format": "pt"})
    bf = {k: v.astype(ml_dtypes.bfloat16) for k, v in w.items()}
    save_file(bf, os.path.join(d, "weights-bf16.safetensors"), metadata={"format": "pt"})

if __name__ == "__main__":
    quant_weights()
    mergekit_goldens()
    tiny_llama()
    dtypes_file()
    edge_cases()
    malformed()
