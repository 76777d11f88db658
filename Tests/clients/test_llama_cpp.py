"""llama.cpp (llama-cpp-python's build) runs wtool's --llama-cpp GGUFs and computes, on token ids,
what transformers computes on wtool's fake-quantized model of the same scheme; ggml's own
quantizer (ggml_quantize_chunk, ctypes) produces wtool's blocks byte for byte."""
import ctypes, json, os
import numpy as np
import pytest
from conftest import TINY, TOKENS, hf_logits, wtool

BASE = os.path.join(TINY, "base")


def llama_cpp_logits(path, tokens=TOKENS):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, logits_all=True, verbose=False)
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], np.float64)


@pytest.mark.parametrize("scheme", ["q8_0", "q4_0", "q5_1", "q6_k", "q4_k"])
def test_gguf_runs_in_llama_cpp_like_the_fake_model_in_transformers(tmp_path, scheme):
    wtool("quantize", BASE, "-o", tmp_path / "m.gguf", "--scheme", scheme, "--llama-cpp", "--tokenizer", "none", "--quiet")
    # the same llama-quantize policy (token_embd and output quantized too), fake-quantized in HF layout
    wtool("quantize", BASE, "-o", tmp_path / "fake", "--scheme", scheme, "--format", "fake", "--llama-cpp", "--quiet")
    got, want = llama_cpp_logits(tmp_path / "m.gguf"), hf_logits(tmp_path / "fake")
    # llama.cpp keeps K and V in f16 and quantizes activations to 8 bits for its quantized dot
    # products: close, not equal (measured 0.05-0.065 on logits of magnitude ~3; the fine-tune's
    # logits, a different model, are 2.0 away).
    assert np.abs(got - want).max() < 4e-2 * max(1.0, np.abs(want).max()), np.abs(got - want).max()
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def ggml_quantize(type_id, rows, imatrix=None):
    """ggml's own encoder, from the libggml-base.so llama-cpp-python ships (imatrix: one weight per column)."""
    import llama_cpp
    lib_dir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    ggml = ctypes.CDLL(os.path.join(lib_dir, "libggml-base.so"))
    ggml.ggml_row_size.restype = ctypes.c_size_t
    ggml.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    ggml.ggml_quantize_chunk.restype = ctypes.c_size_t
    ggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_void_p]
    x = np.ascontiguousarray(rows, np.float32)
    n, k = x.shape
    out = np.zeros(ggml.ggml_row_size(type_id, k) * n, np.uint8)
    qw = None if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
    ggml.ggml_quantize_chunk(type_id, x.ctypes.data, out.ctypes.data, 0, n, k, None if qw is None else qw.ctypes.data)
    return out.tobytes()


@pytest.mark.parametrize("name,type_id", [("q8_0", 8), ("q4_0", 2), ("q4_1", 3), ("q5_0", 6), ("q5_1", 7), ("q2_k", 10), ("q3_k", 11), ("q4_k", 12), ("q5_k", 13), ("q6_k", 14),
                                          ("tq1_0", 34), ("tq2_0", 35)])
def test_blocks_equal_ggml_quantize_chunk(tmp_path, name, type_id):
    import gguf
    from safetensors.numpy import save_file
    rng = np.random.default_rng(7)
    x = rng.standard_normal((16, 512)).astype(np.float32)
    x[1] = 0; x[2, ::7] *= 100; x[3] = np.round(x[3] * 2) / 2; x[4, :256] = 1e-30
    x[5, :32] = 0; x[5, 16:32] = -0.0; x[6, :64] = -0.0  # signed zeros: ggml's comparisons keep +0
    save_file({"model.layers.0.mlp.up_proj.weight": x}, str(tmp_path / "x.safetensors"))
    wtool("quantize", tmp_path / "x.safetensors", "-o", tmp_path / "x.gguf", "--scheme", name, "--quiet")
    t = gguf.GGUFReader(str(tmp_path / "x.gguf")).tensors[0]
    assert np.array(t.data).tobytes() == ggml_quantize(type_id, x)


@pytest.mark.parametrize("name,type_id", [("q8_0", 8), ("q4_0", 2), ("q4_1", 3), ("q5_0", 6), ("q5_1", 7), ("tq1_0", 34), ("tq2_0", 35)])
def test_extreme_blocks_equal_ggml_quantize_chunk(tmp_path, name, type_id):
    """The C kernels' special cases against ggml: subnormal scales (the reciprocal overflows; ggml's
    compiled casts decide the codes), values near the f32 limit, ties, and magnitudes from 1e-40 to
    1e38, on both wtool paths (AVX2 here; the portable path is checked against it in XCTest)."""
    import gguf
    from safetensors.numpy import save_file
    rng = np.random.default_rng(3)
    rows = [np.full(256, 1e-40), np.where(np.arange(256) % 3 == 0, -3e-39, 2e-39), rng.standard_normal(256) * 1e-42,
            np.full(256, 3e38), np.where(np.arange(256) % 2 == 0, 3.3e38, -3.3e38), np.tile([1, -1, 0.5, -0.5, 2.5, -2.5, 1.5, 0.25], 32)]
    rows += [np.clip(rng.standard_normal(256) * 10.0 ** rng.uniform(-40, 38), -3e38, 3e38) for _ in range(42)]
    x = np.stack(rows).astype(np.float32).reshape(-1, 512)
    save_file({"model.layers.0.mlp.up_proj.weight": x}, str(tmp_path / "x.safetensors"))
    wtool("quantize", tmp_path / "x.safetensors", "-o", tmp_path / "x.gguf", "--scheme", name, "--quiet")
    t = gguf.GGUFReader(str(tmp_path / "x.gguf")).tensors[0]
    assert np.array(t.data).tobytes() == ggml_quantize(type_id, x)


MIXES = {"q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18,
         "q8_0": 7, "q4_0": 2, "q4_1": 3, "q5_0": 8, "q5_1": 9}


def mix_model(folder, hidden, ffn, heads, kv, layers, vocab, tied):
    """A LLaMA folder with random weights of a trained model's scale."""
    from safetensors.numpy import save_file
    folder.mkdir(parents=True, exist_ok=True)
    hd = hidden // heads
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": ffn,
               "num_attention_heads": heads, "num_key_value_heads": kv, "num_hidden_layers": layers, "rms_norm_eps": 1e-5,
               "rope_theta": 10000.0, "max_position_embeddings": 256, "vocab_size": vocab, "tie_word_embeddings": tied},
              open(folder / "config.json", "w"))
    rng = np.random.default_rng(5)
    def w(o, i): return (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
    t = {"model.embed_tokens.weight": w(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float32)}
    if not tied:
        t["lm_head.weight"] = w(vocab, hidden)
    for l in range(layers):
        p = f"model.layers.{l}."
        t |= {p + "self_attn.q_proj.weight": w(heads * hd, hidden), p + "self_attn.k_proj.weight": w(kv * hd, hidden),
              p + "self_attn.v_proj.weight": w(kv * hd, hidden), p + "self_attn.o_proj.weight": w(hidden, heads * hd),
              p + "mlp.gate_proj.weight": w(ffn, hidden), p + "mlp.up_proj.weight": w(ffn, hidden), p + "mlp.down_proj.weight": w(hidden, ffn),
              p + "input_layernorm.weight": np.ones(hidden, np.float32), p + "post_attention_layernorm.weight": np.ones(hidden, np.float32)}
    save_file(t, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def mix_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixes")
    # no fallbacks (rows divide into 256), n_gqa 4, untied; and rows of 320 (fallbacks), n_gqa 1, tied
    return {"gqa4": mix_model(d / "gqa4", 256, 512, 4, 1, 8, 512, False),
            "fallback": mix_model(d / "fallback", 320, 768, 5, 5, 4, 384, True)}


@pytest.mark.parametrize("model", ["gqa4", "fallback"])
@pytest.mark.parametrize("mix", list(MIXES))
def test_mix_equals_llama_model_quantize(tmp_path, mix_models, model, mix):
    """wtool's mix, tensor by tensor (type and bytes), equals llama_model_quantize run on wtool's own
    f32 GGUF of the same model."""
    import ctypes, gguf, llama_cpp
    folder = mix_models[model]
    wtool("quantize", folder, "-o", tmp_path / "f32.gguf", "--scheme", "f32", "--llama-cpp", "--tokenizer", "none", "--quiet")
    wtool("quantize", folder, "-o", tmp_path / "ours.gguf", "--scheme", mix, "--llama-cpp", "--tokenizer", "none", "--quiet")
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = MIXES[mix]
    p.nthread = 2
    assert llama_cpp.llama_model_quantize(str(tmp_path / "f32.gguf").encode(), str(tmp_path / "ref.gguf").encode(), ctypes.byref(p)) == 0
    ours = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "ours.gguf")).tensors}
    ref = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "ref.gguf")).tensors}
    assert set(ours) == set(ref)
    for name, r in ref.items():
        o = ours[name]
        assert o.tensor_type == r.tensor_type, (name, o.tensor_type.name, r.tensor_type.name)
        assert np.array(o.data).tobytes() == np.array(r.data).tobytes(), name
    assert gguf.GGUFReader(str(tmp_path / "ours.gguf")).fields["general.file_type"].contents() == MIXES[mix]


def write_imatrix(path, entries, counts=7.0):
    """An imatrix GGUF as llama-imatrix writes it: <name>.in_sum2 [ne0, 1] and <name>.counts [1]."""
    import gguf
    w = gguf.GGUFWriter(str(path), "imatrix")
    w.add_array("imatrix.datasets", ["test"]); w.add_uint32("imatrix.chunk_count", 1); w.add_uint32("imatrix.chunk_size", 512)
    for name, sums in entries.items():
        w.add_tensor(name + ".in_sum2", np.asarray(sums, np.float32).reshape(1, -1))
        w.add_tensor(name + ".counts", np.array([counts], np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return {k: (np.asarray(v, np.float32) / np.float32(counts)).astype(np.float32) for k, v in entries.items()}


@pytest.mark.parametrize("name,type_id", [("q8_0", 8), ("q4_0", 2), ("q4_1", 3), ("q5_0", 6), ("q5_1", 7), ("q2_k", 10), ("q3_k", 11),
                                          ("q4_k", 12), ("q5_k", 13), ("q6_k", 14)])
def test_blocks_with_imatrix_equal_ggml_quantize_chunk(tmp_path, name, type_id):
    import gguf
    from safetensors.numpy import save_file
    rng = np.random.default_rng(8)
    x = rng.standard_normal((12, 512)).astype(np.float32)
    x[1] = 0; x[2, ::7] *= 100; x[3] = np.round(x[3] * 2) / 2; x[4, :32] = -0.0
    sums = rng.random(512).astype(np.float32) * 50; sums[:16] = 0  # some columns never active
    values = write_imatrix(tmp_path / "imatrix.gguf", {"blk.0.ffn_up.weight": sums})
    save_file({"model.layers.0.mlp.up_proj.weight": x}, str(tmp_path / "x.safetensors"))
    wtool("quantize", tmp_path / "x.safetensors", "-o", tmp_path / "x.gguf", "--scheme", name, "--imatrix", tmp_path / "imatrix.gguf", "--quiet")
    t = gguf.GGUFReader(str(tmp_path / "x.gguf")).tensors[0]
    assert np.array(t.data).tobytes() == ggml_quantize(type_id, x, values["blk.0.ffn_up.weight"])
    if name != "q8_0":  # the weights change the search (Q8_0 ignores them, as ggml does)
        assert np.array(t.data).tobytes() != ggml_quantize(type_id, x)


@pytest.mark.parametrize("mix", ["q4_k_m", "q2_k", "q3_k_m", "q5_k_s", "q6_k", "q4_0"])
def test_mix_with_imatrix_equals_llama_model_quantize(tmp_path, mix_models, mix):
    import ctypes, gguf, llama_cpp
    folder = mix_models["gqa4"]
    wtool("quantize", folder, "-o", tmp_path / "f32.gguf", "--scheme", "f32", "--llama-cpp", "--tokenizer", "none", "--quiet")
    rng = np.random.default_rng(9)
    tensors = gguf.GGUFReader(str(tmp_path / "f32.gguf")).tensors
    entries = {t.name: rng.random(int(t.shape[0])).astype(np.float32) * 10 for t in tensors
               if len(t.shape) == 2 and t.name not in ("token_embd.weight",)}
    values = write_imatrix(tmp_path / "imatrix.gguf", entries)
    wtool("quantize", folder, "-o", tmp_path / "ours.gguf", "--scheme", mix, "--llama-cpp", "--tokenizer", "none",
          "--imatrix", tmp_path / "imatrix.gguf", "--quiet")
    keep = [(k.encode(), np.ascontiguousarray(v)) for k, v in values.items()]
    arr = (llama_cpp.llama_model_imatrix_data * (len(keep) + 1))(
        *[llama_cpp.llama_model_imatrix_data(k, v.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), v.size) for k, v in keep],
        llama_cpp.llama_model_imatrix_data(None, None, 0))
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = MIXES[mix]
    p.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    assert llama_cpp.llama_model_quantize(str(tmp_path / "f32.gguf").encode(), str(tmp_path / "ref.gguf").encode(), ctypes.byref(p)) == 0
    ours = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "ours.gguf")).tensors}
    ref = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "ref.gguf")).tensors}
    for name, r in ref.items():
        assert ours[name].tensor_type == r.tensor_type, (name, ours[name].tensor_type.name, r.tensor_type.name)
        assert np.array(ours[name].data).tobytes() == np.array(r.data).tobytes(), name
    # the importance weights did change the quantized tensors (both tools used them)
    wtool("quantize", folder, "-o", tmp_path / "plain.gguf", "--scheme", mix, "--llama-cpp", "--tokenizer", "none", "--quiet")
    plain = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "plain.gguf")).tensors}
    changed = [n for n in entries if np.array(plain[n].data).tobytes() != np.array(ours[n].data).tobytes()]
    assert len(changed) >= len(entries) // 2, (len(changed), len(entries))
