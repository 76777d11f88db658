"""llama-quantize's mixes (--llama-cpp with q4_k_m, q2_k, ...): each tensor's type against the table
measured with llama.cpp's own llama_model_quantize on a synthetic LLaMA (16 layers, n_gqa 4, rows
that divide into 256, untied; ../shared/reference/gguf-export.md §4.6). Bytes are compared with
llama_model_quantize itself in make test-clients."""
import json, os
import numpy as np
import pytest
import gguf
from safetensors.numpy import save_file
from conftest import run

MORE_BITS = {0, 1, 4, 7, 10, 13, 14, 15}   # use_more_bits(i, 16)
EXPECTED = {  # ftype: token_embd, output, q/k/gate/up, attn_v(i), attn_output, ffn_down(i), file_type
    "q2_k": ("q2_k", "q6_k", "q2_k", lambda i: "q4_k", "q3_k", lambda i: "q3_k", 10),
    "q3_k_m": ("q3_k", "q6_k", "q3_k", lambda i: "q5_k" if i < 2 else "q4_k", "q4_k", lambda i: "q5_k" if i < 1 else "q4_k", 12),
    "q4_k_s": ("q4_k", "q6_k", "q4_k", lambda i: "q5_k" if i < 4 else "q4_k", "q4_k", lambda i: "q5_k" if i < 2 else "q4_k", 14),
    "q4_k_m": ("q4_k", "q6_k", "q4_k", lambda i: "q6_k" if i in MORE_BITS else "q4_k", "q4_k", lambda i: "q6_k" if i in MORE_BITS else "q4_k", 15),
    "q5_k_m": ("q5_k", "q6_k", "q5_k", lambda i: "q6_k" if i in MORE_BITS else "q5_k", "q5_k", lambda i: "q6_k" if i in MORE_BITS else "q5_k", 17),
    "q4_0": ("q4_0", "q6_k", "q4_0", lambda i: "q4_0", "q4_0", lambda i: "q4_0", 2),
    "q8_0": ("q8_0", "q8_0", "q8_0", lambda i: "q8_0", "q8_0", lambda i: "q8_0", 7),
}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    d = tmp_path_factory.mktemp("mix")
    hidden, ffn, heads, kv, layers, vocab = 256, 512, 8, 2, 16, 256
    json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": ffn,
               "num_attention_heads": heads, "num_key_value_heads": kv, "num_hidden_layers": layers, "rms_norm_eps": 1e-5,
               "rope_theta": 10000.0, "max_position_embeddings": 128, "vocab_size": vocab, "tie_word_embeddings": False},
              open(d / "config.json", "w"))
    rng = np.random.default_rng(0)
    def w(o, i): return (rng.standard_normal((o, i)) / 16).astype(np.float32)
    t = {"model.embed_tokens.weight": w(vocab, hidden), "lm_head.weight": w(vocab, hidden), "model.norm.weight": np.ones(hidden, np.float32)}
    for l in range(layers):
        p = f"model.layers.{l}."
        t |= {p + "self_attn.q_proj.weight": w(hidden, hidden), p + "self_attn.k_proj.weight": w(64, hidden),
              p + "self_attn.v_proj.weight": w(64, hidden), p + "self_attn.o_proj.weight": w(hidden, hidden),
              p + "mlp.gate_proj.weight": w(ffn, hidden), p + "mlp.up_proj.weight": w(ffn, hidden), p + "mlp.down_proj.weight": w(hidden, ffn),
              p + "input_layernorm.weight": np.ones(hidden, np.float32), p + "post_attention_layernorm.weight": np.ones(hidden, np.float32)}
    save_file(t, str(d / "model.safetensors"))
    return d


@pytest.mark.parametrize("mix", list(EXPECTED))
def test_mix_types_equal_llama_quantize_table(synthetic, tmp_path, mix):
    embd, out, plain, attn_v, attn_output, ffn_down, ftype = EXPECTED[mix]
    run("quantize", synthetic, "-o", tmp_path / "m.gguf", "--scheme", mix, "--llama-cpp", "--tokenizer", "none", "--quiet")
    r = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    types = {t.name: t.tensor_type.name.lower() for t in r.tensors}
    assert types["token_embd.weight"] == embd and types["output.weight"] == out
    for i in range(16):
        b = f"blk.{i}."
        for n in ("attn_q", "attn_k", "ffn_gate", "ffn_up"):
            assert types[b + n + ".weight"] == plain, (b + n)
        assert types[b + "attn_v.weight"] == attn_v(i), (i, types[b + "attn_v.weight"])
        assert types[b + "attn_output.weight"] == attn_output
        assert types[b + "ffn_down.weight"] == ffn_down(i), (i, types[b + "ffn_down.weight"])
        assert types[b + "attn_norm.weight"] == "f32" and types[b + "ffn_norm.weight"] == "f32"
    assert r.fields["general.file_type"].contents() == ftype
    report = json.load(open(tmp_path / "m.report.json"))
    row = next(x for x in report["tensors"] if x.get("output_name") == "blk.4.attn_v.weight")
    assert row["type"] == attn_v(4) and row["rule"]
    assert report["summary"]["file_bits_per_weight"] > 0


def test_fallback_when_rows_do_not_divide(tmp_path):
    """Rows of 320 (1.25 x 256): K types fall back (q4_k -> q5_0, q6_k -> q8_0), tied output -> q8_0."""
    d = tmp_path / "m"; d.mkdir()
    json.dump({"model_type": "llama", "hidden_size": 320, "intermediate_size": 512, "num_attention_heads": 5, "num_key_value_heads": 5,
               "num_hidden_layers": 2, "rms_norm_eps": 1e-5, "rope_theta": 1e4, "max_position_embeddings": 64, "vocab_size": 64,
               "tie_word_embeddings": True}, open(d / "config.json", "w"))
    rng = np.random.default_rng(1)
    def w(o, i): return (rng.standard_normal((o, i)) / 16).astype(np.float32)
    t = {"model.embed_tokens.weight": w(64, 320), "model.norm.weight": np.ones(320, np.float32)}
    for l in range(2):
        p = f"model.layers.{l}."
        t |= {p + "self_attn.q_proj.weight": w(320, 320), p + "self_attn.k_proj.weight": w(320, 320), p + "self_attn.v_proj.weight": w(320, 320),
              p + "self_attn.o_proj.weight": w(320, 320), p + "mlp.gate_proj.weight": w(512, 320), p + "mlp.up_proj.weight": w(512, 320),
              p + "mlp.down_proj.weight": w(320, 512), p + "input_layernorm.weight": np.ones(320, np.float32),
              p + "post_attention_layernorm.weight": np.ones(320, np.float32)}
    save_file(t, str(d / "model.safetensors"))
    run("quantize", d, "-o", tmp_path / "m.gguf", "--scheme", "q4_k_m", "--llama-cpp", "--tokenizer", "none", "--quiet")
    types = {x.name: x.tensor_type.name.lower() for x in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors}
    assert "output.weight" not in types and types["token_embd.weight"] == "q8_0"
    # use_more_bits(i, 2) holds for layer 1 only: q6_k there (-> q8_0 on rows of 320), q4_k elsewhere (-> q5_0)
    assert types["blk.0.attn_q.weight"] == "q5_0" and types["blk.0.attn_v.weight"] == "q5_0" and types["blk.1.attn_v.weight"] == "q8_0"
    assert types["blk.0.ffn_down.weight"] == "q4_k" and types["blk.1.ffn_down.weight"] == "q6_k"   # rows of 512 divide into 256


def test_mix_needs_llama_cpp_and_imatrix_needs_a_block_scheme(tmp_path, synthetic):
    code, _, err = run("quantize", synthetic, "-o", tmp_path / "m.gguf", "--scheme", "q4_k_m", check=False)
    assert code == 2 and "needs --llama-cpp" in err
    code, _, err = run("quantize", synthetic, "-o", tmp_path / "m", "--scheme", "int4", "--imatrix", tmp_path / "x.gguf", check=False)
    assert code == 2 and "--imatrix applies" in err
    (tmp_path / "bad.dat").write_bytes(b"\x05\x00")
    code, _, err = run("quantize", synthetic, "-o", tmp_path / "m.gguf", "--scheme", "q4_k", "--imatrix", tmp_path / "bad.dat", check=False)
    assert code == 1 and "bad.dat" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.gguf").exists()


def test_imatrix_and_mix_errors_are_one_line_and_write_nothing(tmp_path, synthetic):
    out = tmp_path / "out"; out.mkdir()
    def fails(args, code, needle):
        c, _, err = run("quantize", synthetic, "-o", out / "m.gguf", *args, check=False)
        assert c == code and needle in err and len(err.strip().splitlines()) == 1, err
        assert os.listdir(out) == []
    # an imatrix whose vector does not match the tensor's columns; a GGUF with no imatrix entries; a non-finite value
    w = gguf.GGUFWriter(str(tmp_path / "short.gguf"), "imatrix")
    w.add_tensor("blk.0.attn_q.weight.in_sum2", np.ones((1, 100), np.float32)); w.add_tensor("blk.0.attn_q.weight.counts", np.ones(1, np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    fails(["--scheme", "q4_k_m", "--llama-cpp", "--tokenizer", "none", "--imatrix", tmp_path / "short.gguf"], 1, "has 100 values, the tensor has 256 columns")
    w = gguf.GGUFWriter(str(tmp_path / "empty.gguf"), "imatrix")
    w.add_tensor("x", np.ones(4, np.float32)); w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    fails(["--scheme", "q4_k_m", "--llama-cpp", "--tokenizer", "none", "--imatrix", tmp_path / "empty.gguf"], 1, "without imatrix entries")
    w = gguf.GGUFWriter(str(tmp_path / "nan.gguf"), "imatrix")
    v = np.ones((1, 256), np.float32); v[0, 3] = np.inf
    w.add_tensor("blk.0.attn_q.weight.in_sum2", v); w.add_tensor("blk.0.attn_q.weight.counts", np.ones(1, np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    fails(["--scheme", "q4_k_m", "--llama-cpp", "--tokenizer", "none", "--imatrix", tmp_path / "nan.gguf"], 1, "not finite")
    # --llama-cpp with the fake format needs a mix
    c, _, err = run("quantize", synthetic, "-o", tmp_path / "fake", "--scheme", "int4", "--format", "fake", "--llama-cpp", check=False)
    assert c == 2 and "--llama-cpp applies to --format gguf" in err


def test_no_fallback_for_a_32_element_type_is_an_error(tmp_path):
    """Rows of 48 do not divide into q4_0's blocks of 32: llama-quantize stops, and so does wtool."""
    d = tmp_path / "m"; d.mkdir()
    json.dump({"model_type": "llama", "hidden_size": 48, "intermediate_size": 64, "num_attention_heads": 3, "num_key_value_heads": 3,
               "num_hidden_layers": 1, "rms_norm_eps": 1e-5, "rope_theta": 1e4, "max_position_embeddings": 64, "vocab_size": 32,
               "tie_word_embeddings": True}, open(d / "config.json", "w"))
    rng = np.random.default_rng(2)
    t = {"model.embed_tokens.weight": rng.standard_normal((32, 48)).astype(np.float32), "model.norm.weight": np.ones(48, np.float32)}
    for n, s in [("self_attn.q_proj", (48, 48)), ("self_attn.k_proj", (48, 48)), ("self_attn.v_proj", (48, 48)), ("self_attn.o_proj", (48, 48)),
                 ("mlp.gate_proj", (64, 48)), ("mlp.up_proj", (64, 48)), ("mlp.down_proj", (48, 64))]:
        t[f"model.layers.0.{n}.weight"] = rng.standard_normal(s).astype(np.float32)
    save_file(t, str(d / "model.safetensors"))
    out = tmp_path / "out"; out.mkdir()
    c, _, err = run("quantize", d, "-o", out / "m.gguf", "--scheme", "q4_0", "--llama-cpp", "--tokenizer", "none", check=False)
    assert c == 1 and "defines no fallback" in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(out) == []
