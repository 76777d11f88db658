"""wtool convert model.gguf -o DIR: a llama.cpp GGUF back into a Hugging Face folder.

References: the original safetensors model (a float GGUF must come back exactly), gguf-py's own
dequantizer (quantized tensors come back as their dequantization, rows un-permuted by a numpy
transcription of convert_hf_to_gguf's permute), and the `tokenizers` package (the rebuilt
tokenizer.json encodes a corpus like the original)."""
import json, os

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize
from safetensors.numpy import load_file

from conftest import run
from tokenizer_fixtures import CORPUS, TEMPLATE, bpe_tokenizer, model_folder


def make_model(tmp_path, kind="llama-bpe", arch="llama", name="model", **config):
    tok = bpe_tokenizer(kind)
    folder = model_folder(tmp_path / name, tok.get_vocab_size(with_added_tokens=True), arch=arch, **config)
    tok.save(str(folder / "tokenizer.json"))
    json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "add_bos_token": True, "chat_template": TEMPLATE},
              open(folder / "tokenizer_config.json", "w"))
    return folder, tok


def to_gguf(folder, tmp_path, scheme, name=None):
    out = tmp_path / f"{name or scheme}.gguf"
    run("quantize", folder, "-o", out, "--scheme", scheme, "--llama-cpp", "--quiet")
    return out


def hf_permute(w, heads):
    """convert_hf_to_gguf's LlamaModel.permute (what wtool must undo)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, heads):
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_float_round_trip_is_exact_and_config_matches(tmp_path):
    folder, _ = make_model(tmp_path)
    orig = load_file(str(folder / "model.safetensors"))
    back = tmp_path / "back"
    run("convert", to_gguf(folder, tmp_path, "f32"), "-o", back, "--quiet")
    got = load_file(str(back / "model.safetensors"))
    assert sorted(got) == sorted(orig)
    for k in orig:
        assert got[k].dtype == np.float32 and got[k].tobytes() == orig[k].tobytes(), k
    c0, c1 = json.load(open(folder / "config.json")), json.load(open(back / "config.json"))
    for k in ["hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
              "rms_norm_eps", "rope_theta", "max_position_embeddings", "vocab_size", "tie_word_embeddings", "model_type"]:
        assert c1[k] == c0[k], k
    assert c1["torch_dtype"] == "float32" and c1["architectures"] == ["LlamaForCausalLM"]
    report = json.load(open(back / "wtool-report.json"))
    assert report["summary"]["unpermuted"] == 2 and report["summary"]["tokenizer"] is True


def test_f16_gguf_comes_back_as_f16(tmp_path):
    folder, _ = make_model(tmp_path)
    orig = load_file(str(folder / "model.safetensors"))
    back = tmp_path / "back"
    run("convert", to_gguf(folder, tmp_path, "f16"), "-o", back, "--quiet")
    got = load_file(str(back / "model.safetensors"))
    for k in orig:
        assert got[k].dtype == np.float16 and got[k].tobytes() == orig[k].astype(np.float16).tobytes(), k
    assert json.load(open(back / "config.json"))["torch_dtype"] == "float16"
    run("convert", tmp_path / "f16.gguf", "-o", tmp_path / "b32", "--dtype", "f32", "--quiet")
    assert load_file(str(tmp_path / "b32" / "model.safetensors"))["model.norm.weight"].dtype == np.float32


@pytest.mark.parametrize("scheme", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "tq1_0", "tq2_0", "q4_k_m"])
def test_quantized_tensors_equal_gguf_py_dequantization(tmp_path, scheme):
    # hidden 256 so the K-quant blocks of 256 fit the rows
    folder, _ = make_model(tmp_path, hidden_size=256, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)
    # make_model's tensors are 32 wide: write a 256-wide model instead
    rng = np.random.default_rng(3)
    vocab = json.load(open(folder / "config.json"))["vocab_size"]
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, 256)).astype(np.float32), "model.norm.weight": np.ones(256, np.float32),
         "model.layers.0.input_layernorm.weight": np.ones(256, np.float32), "model.layers.0.post_attention_layernorm.weight": np.ones(256, np.float32)}
    for p, shape in [("self_attn.q_proj", (256, 256)), ("self_attn.k_proj", (128, 256)), ("self_attn.v_proj", (128, 256)),
                     ("self_attn.o_proj", (256, 256)), ("mlp.gate_proj", (256, 256)), ("mlp.up_proj", (256, 256)), ("mlp.down_proj", (256, 256))]:
        t[f"model.layers.0.{p}.weight"] = (rng.standard_normal(shape) / 16).astype(np.float32)
    from safetensors.numpy import save_file
    save_file(t, str(folder / "model.safetensors"))
    src = to_gguf(folder, tmp_path, scheme)
    back = tmp_path / "back"
    run("convert", src, "-o", back, "--quiet")
    got = load_file(str(back / "model.safetensors"))
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    parts = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
             "ffn_norm": "post_attention_layernorm"}
    reader = gguf.GGUFReader(str(src))
    quantized = 0
    for x in reader.tensors:
        name = names.get(x.name) or "model.layers.0." + parts[x.name.split(".")[2]] + ".weight"
        want = dequantize(x.data, x.tensor_type).astype(np.float32).reshape(got[name].shape)
        if x.name == "blk.0.attn_q.weight":
            want = unpermute(want, 4)
        if x.name == "blk.0.attn_k.weight":
            want = unpermute(want, 2)
        quantized += x.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
        assert got[name].dtype == np.float32 and got[name].tobytes() == want.tobytes(), (x.name, x.tensor_type)
    assert quantized >= 7
    # the un-permutation undoes the export's: the float parts of the original come back exactly
    assert np.array_equal(unpermute(hf_permute(t["model.layers.0.self_attn.q_proj.weight"], 4), 4), t["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("kind,arch", [("llama-bpe", "llama"), ("gpt-2", "llama"), ("starcoder", "llama"), ("qwen2", "qwen2"), ("dbrx", "llama")])
def test_tokenizer_encodes_like_the_original(tmp_path, kind, arch):
    from tokenizers import Tokenizer
    folder, tok = make_model(tmp_path, kind=kind, arch=arch)
    back = tmp_path / "back"
    run("convert", to_gguf(folder, tmp_path, "f32"), "-o", back, "--quiet")
    rebuilt = Tokenizer.from_file(str(back / "tokenizer.json"))
    tc = json.load(open(back / "tokenizer_config.json"))
    assert tc["bos_token"] == "<|endoftext|>" and tc["eos_token"] == "<|im_end|>" and tc["chat_template"] == TEMPLATE
    assert tc["add_bos_token"] is True
    for text in CORPUS[:9] + ["<tool> and <extra_special> inside", "<|im_start|>system\nx<|im_end|>"]:
        want = tok.encode(text).ids
        got = rebuilt.encode(text).ids
        assert got[0] == 0 and got[1:] == want, text   # BOS added, as the GGUF says
        assert rebuilt.decode(got, skip_special_tokens=True) == tok.decode(want, skip_special_tokens=True)


def test_qwen_names_biases_and_norms(tmp_path):
    for arch in ("qwen2", "qwen3"):
        folder, _ = make_model(tmp_path, kind="qwen2", arch=arch, name=arch, head_dim=8)
        orig = load_file(str(folder / "model.safetensors"))
        if arch == "qwen2":   # qwen2 has q/k/v biases
            from safetensors.numpy import save_file
            rng = np.random.default_rng(5)
            for p, n in [("q_proj", 32), ("k_proj", 16), ("v_proj", 16)]:
                orig[f"model.layers.0.self_attn.{p}.bias"] = rng.standard_normal(n).astype(np.float32)
            save_file(orig, str(folder / "model.safetensors"))
        back = tmp_path / f"{arch}-back"
        run("convert", to_gguf(folder, tmp_path, "f32", name=arch), "-o", back, "--quiet")
        got = load_file(str(back / "model.safetensors"))
        assert sorted(got) == sorted(orig)
        for k in orig:
            assert got[k].tobytes() == orig[k].tobytes(), (arch, k)
        c = json.load(open(back / "config.json"))
        assert c["model_type"] == arch and c["head_dim"] == 8


def test_rope_scaling_round_trips(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    folder, _ = make_model(tmp_path, name="l3", rope_theta=500000.0, rope_scaling=scaling, head_dim=16, num_attention_heads=2,
                           num_key_value_heads=1, original_max_position_embeddings=64)
    # q/k shapes for 2 heads of 16
    src = to_gguf(folder, tmp_path, "f32", name="l3")
    back = tmp_path / "l3-back"
    run("convert", src, "-o", back, "--quiet")
    c = json.load(open(back / "config.json"))
    assert c["rope_scaling"]["rope_type"] == "llama3" and c["rope_scaling"]["factor"] == 8.0
    again = to_gguf(back, tmp_path, "f32", name="l3-again")
    a = {x.name: np.array(x.data) for x in gguf.GGUFReader(str(src)).tensors}["rope_freqs.weight"]
    b = {x.name: np.array(x.data) for x in gguf.GGUFReader(str(again)).tensors}["rope_freqs.weight"]
    assert np.allclose(a, b, rtol=1e-6, atol=0) and len(set(np.round(a, 4))) > 2
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 32.0, "beta_slow": 1.0}
    folder, _ = make_model(tmp_path, name="y", rope_scaling=yarn)
    back = tmp_path / "y-back"
    run("convert", to_gguf(folder, tmp_path, "f32", name="y"), "-o", back, "--quiet")
    assert json.load(open(back / "config.json"))["rope_scaling"] == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                                                                     "beta_fast": 32.0, "beta_slow": 1.0}


def test_untied_output_and_sentencepiece_warning(tmp_path):
    folder, _ = make_model(tmp_path, tie_word_embeddings=False)
    back = tmp_path / "back"
    run("convert", to_gguf(folder, tmp_path, "f32"), "-o", back, "--quiet")
    assert "lm_head.weight" in load_file(str(back / "model.safetensors"))
    assert json.load(open(back / "config.json"))["tie_word_embeddings"] is False


def write_gguf(path, arch="llama", tensors=None, raw_type=None):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1); w.add_context_length(64); w.add_embedding_length(32); w.add_feed_forward_length(64)
    w.add_head_count(4); w.add_head_count_kv(2); w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(10000.0)
    for name, a in (tensors or {"token_embd.weight": np.ones((10, 32), np.float32)}).items():
        if raw_type is not None and name != "token_embd.weight":
            w.add_tensor(name, a, raw_dtype=raw_type)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path):
    cases = []
    p = tmp_path / "unknown.gguf"; write_gguf(p, tensors={"token_embd.weight": np.ones((10, 32), np.float32), "blk.0.mystery.weight": np.ones(4, np.float32)})
    cases.append((p, "blk.0.mystery.weight"))
    p = tmp_path / "arch.gguf"; write_gguf(p, arch="gpt2"); cases.append((p, "architecture 'gpt2'"))
    p = tmp_path / "iq.gguf"
    write_gguf(p, tensors={"token_embd.weight": np.ones((10, 32), np.float32), "blk.0.ffn_up.weight": np.zeros((4, 292), np.uint8)},
               raw_type=gguf.GGMLQuantizationType.Q8_K)
    cases.append((p, "q8_k"))
    p = tmp_path / "cut.gguf"; write_gguf(p); data = open(p, "rb").read(); open(p, "wb").write(data[:200]); cases.append((p, str(p)))
    for path, needle in cases:
        out = tmp_path / ("o-" + path.name)
        code, _, err = run("convert", path, "-o", out, check=False)
        assert code == 1, path
        assert len(err.strip().splitlines()) == 1 and needle in err, err
        assert not out.exists()
    code, _, err = run("convert", tmp_path / "arch.gguf", "-o", tmp_path / "x.safetensors", check=False)
    assert code != 0 and not (tmp_path / "x.safetensors").exists()
    folder, _ = make_model(tmp_path)
    code, _, err = run("merge", "--method", "linear", "--weight", "1", to_gguf(folder, tmp_path, "f32"), folder, "-o", tmp_path / "m", check=False)
    assert code == 1 and "wtool convert" in err


READ_ONLY = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS", "MXFP4", "NVFP4"]


@pytest.mark.parametrize("name", READ_ONLY)
def test_types_wtool_only_reads_equal_gguf_py_dequantization(tmp_path, name):
    """Random blocks (with sane f16 scales) of every type gguf-py dequantizes that wtool does not
    write: the imported weights equal gguf-py's dequantize, bit for bit (attn_q also un-permuted)."""
    qt = getattr(gguf.GGMLQuantizationType, name)
    block, size = gguf.GGML_QUANT_SIZES[qt]
    rng = np.random.default_rng(int(qt))
    def blocks(rows, width):
        raw = rng.integers(0, 256, size=(rows, width // block, size), dtype=np.uint8)
        if name not in ("IQ1_M", "MXFP4", "NVFP4"):   # the f16 scale leads the block
            raw[..., :2] = rng.uniform(-2, 2, size=(rows, width // block, 1)).astype(np.float16).view(np.uint8)
        if name == "MXFP4":
            raw[..., 0] = rng.integers(100, 140, size=(rows, width // block))
        return raw.reshape(rows, -1)
    tensors = {"token_embd.weight": rng.standard_normal((10, 32)).astype(np.float32),
               "blk.0.ffn_up.weight": blocks(8, 512), "blk.0.attn_q.weight": blocks(32, 256)}
    path = tmp_path / f"{name}.gguf"
    write_gguf(path, tensors=tensors, raw_type=qt)
    back = tmp_path / "back"
    run("convert", path, "-o", back, "--quiet")
    got = load_file(str(back / "model.safetensors"))
    reader = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    up = dequantize(reader["blk.0.ffn_up.weight"].data, qt).astype(np.float32).reshape(8, 512)
    q = unpermute(dequantize(reader["blk.0.attn_q.weight"].data, qt).astype(np.float32).reshape(32, 256), 4)
    np.testing.assert_array_equal(got["model.layers.0.mlp.up_proj.weight"], up)
    np.testing.assert_array_equal(got["model.layers.0.self_attn.q_proj.weight"], q)
    assert np.isfinite(up).mean() > 0.9
    report = json.load(open(back / "wtool-report.json"))
    assert {r["dtype_in"] for r in report["tensors"]} == {"f32", name.lower()}


@pytest.mark.parametrize("dummy_prefix", [True, False])
def test_sentencepiece_vocabulary_is_rebuilt(tmp_path, dummy_prefix):
    """A llama GGUF with a SentencePiece vocabulary: tokenizer.model comes back (pieces, scores,
    types, special ids, byte fallback) and sentencepiece encodes a corpus as the original does
    under llama.cpp's normalisation (identity, the dummy prefix as the GGUF says)."""
    import sentencepiece as spm
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2, normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, add_dummy_prefix=dummy_prefix)
    # (user_defined_symbols are left out: convert types them NORMAL in the GGUF, as llama.cpp treats them)
    folder = model_folder(tmp_path / "model", 400, bos_token_id=1, eos_token_id=2)
    os.replace(tmp_path / "sp.model", folder / "tokenizer.model")
    json.dump({"add_bos_token": True, "chat_template": TEMPLATE, "add_prefix_space": dummy_prefix}, open(folder / "tokenizer_config.json", "w"))
    back = tmp_path / "back"
    run("convert", to_gguf(folder, tmp_path, "f32"), "-o", back, "--quiet")
    orig, rebuilt = spm.SentencePieceProcessor(), spm.SentencePieceProcessor()
    orig.LoadFromFile(str(folder / "tokenizer.model"))
    rebuilt.LoadFromFile(str(back / "tokenizer.model"))
    assert rebuilt.get_piece_size() == orig.get_piece_size()
    for i in range(orig.get_piece_size()):
        assert rebuilt.id_to_piece(i) == orig.id_to_piece(i) and rebuilt.get_score(i) == orig.get_score(i), i
        assert (rebuilt.is_control(i), rebuilt.is_unknown(i), rebuilt.is_byte(i)) == (orig.is_control(i), orig.is_unknown(i), orig.is_byte(i))
    assert (rebuilt.bos_id(), rebuilt.eos_id(), rebuilt.unk_id()) == (1, 2, 0)
    for text in CORPUS[:9] + ["  two  spaces", "tab\there", "\u00e9\u00e8 \U0001F642"]:
        assert rebuilt.encode(text) == orig.encode(text), text
    tc = json.load(open(back / "tokenizer_config.json"))
    assert tc["bos_token"] == "<s>" and tc["add_bos_token"] is True and tc["chat_template"] == TEMPLATE


def test_more_refusals(tmp_path):
    """GGUF import's other errors: one line, nothing written."""
    cases = []
    p = tmp_path / "nokey.gguf"
    w = gguf.GGUFWriter(str(p), "llama")
    w.add_block_count(1); w.add_context_length(64); w.add_embedding_length(32); w.add_feed_forward_length(64)
    w.add_head_count(4); w.add_rope_freq_base(10000.0)   # no layer_norm_rms_epsilon
    w.add_tensor("token_embd.weight", np.ones((10, 32), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    cases.append((p, [], "layer_norm_rms_epsilon", 1))
    p = tmp_path / "noemb.gguf"; write_gguf(p, tensors={"output_norm.weight": np.ones(32, np.float32)}); cases.append((p, [], "token_embd.weight", 1))
    p = tmp_path / "rope.gguf"
    write_gguf(p, tensors={"token_embd.weight": np.ones((10, 32), np.float32), "rope_freqs.weight": np.array([1, 3, 2], np.float32)})
    cases.append((p, [], "rope_freqs.weight", 1))
    p = tmp_path / "ok.gguf"; write_gguf(p)
    cases.append((p, ["--include", "token_embd*"], "--include/--exclude", 2))
    cases.append((p, ["--dtype", "f64"], "f32, f16 or bf16", 2))
    for path, extra, needle, status in cases:
        out = tmp_path / ("o-" + path.name + str(len(extra)))
        code, _, err = run("convert", path, "-o", out, *extra, check=False)
        assert code == status and needle in err and len(err.strip().splitlines()) == 1, (path, err)
        assert not out.exists()
