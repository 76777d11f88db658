"""quantize --llama-cpp writes the tokenizer keys convert_hf_to_gguf.py would write. The reference is
built here, independently of wtool, with the `tokenizers` and `sentencepiece` packages and gguf-py
(SpecialVocab for merges, special ids, add_* flags and the chat template; GGUFWriter/GGUFReader),
following convert's rules (get_vocab_base, _create_vocab_sentencepiece), from tokenizer folders the
test trains itself."""
import json, os
import numpy as np
import pytest
import gguf
from safetensors.numpy import save_file
from conftest import run
from tokenizer_fixtures import CORPUS, TEMPLATE, bpe_tokenizer, model_folder

def looks_special(t):
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<\uff5c") and t.endswith("\uff5c>")) or (t.startswith("<unused") and t.endswith(">")))


def reference_bpe(folder, vocab_size, pre):
    """convert's get_vocab_base + _set_vocab_gpt2, with `tokenizers` in place of AutoTokenizer."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    reverse = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    added = {a.content: a for a in tok.get_added_tokens_decoder().values()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]"); types.append(gguf.TokenType.UNUSED); continue
        t = reverse[i]
        if t in added:
            if added[t].special or looks_special(t):
                types.append(gguf.TokenType.CONTROL)
            else:
                t = t.replace("\u2581", " "); types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(t)
    w = gguf.GGUFWriter(None, "llama")
    w.add_tokenizer_model("gpt2"); w.add_tokenizer_pre(pre); w.add_token_list(tokens); w.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True).add_to_gguf(w, quiet=True)
    return w


def reference_spm(folder, vocab_size):
    """convert's _create_vocab_sentencepiece + _set_vocab_sentencepiece, with sentencepiece itself."""
    from sentencepiece import SentencePieceProcessor
    sp = SentencePieceProcessor(); sp.LoadFromFile(str(folder / "tokenizer.model"))
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]; scores = [-10000.0] * vocab_size
    types = [gguf.TokenType.UNUSED] * vocab_size
    for i in range(min(sp.vocab_size(), vocab_size)):
        tokens[i] = sp.IdToPiece(i); scores[i] = sp.GetScore(i)
        types[i] = (gguf.TokenType.UNKNOWN if sp.IsUnknown(i) else gguf.TokenType.CONTROL if sp.IsControl(i)
                    else gguf.TokenType.UNUSED if sp.IsUnused(i) else gguf.TokenType.BYTE if sp.IsByte(i) else gguf.TokenType.NORMAL)
    added_json = folder / "added_tokens.json"
    if added_json.exists():
        for t, i in json.load(open(added_json)).items():
            if i < vocab_size:
                tokens[i] = t; scores[i] = -1000.0; types[i] = gguf.TokenType.USER_DEFINED
    tc = json.load(open(folder / "tokenizer_config.json"))
    for key, d in tc.get("added_tokens_decoder", {}).items():
        i = int(key)
        if i < vocab_size:
            scores[i] = -1000.0
            if d.get("special") or looks_special(d["content"]):
                tokens[i] = d["content"]; types[i] = gguf.TokenType.CONTROL
            else:
                tokens[i] = d["content"].replace("\u2581", " "); types[i] = gguf.TokenType.USER_DEFINED
    w = gguf.GGUFWriter(None, "llama")
    w.add_tokenizer_model("llama"); w.add_tokenizer_pre("default"); w.add_token_list(tokens)
    w.add_token_scores(scores); w.add_token_types(types)
    gguf.SpecialVocab(folder, n_vocab=len(tokens)).add_to_gguf(w, quiet=True)
    return w


def fields(reader_or_writer, tmp_path, name):
    """{key: python value} of the tokenizer.* keys."""
    if isinstance(reader_or_writer, gguf.GGUFWriter):
        path = tmp_path / f"{name}.gguf"
        reader_or_writer.path = path  # write a tensor-less file through gguf-py, then read it back
        reader_or_writer.write_header_to_file(path); reader_or_writer.write_kv_data_to_file(); reader_or_writer.close()
        reader_or_writer = gguf.GGUFReader(str(path))
    out = {}
    for k, f in reader_or_writer.fields.items():
        if k.startswith("tokenizer."):
            v = f.contents()
            out[k] = [round(x, 6) if isinstance(x, float) else x for x in v] if isinstance(v, list) else v
    return out


def wtool_gguf(folder, tmp_path, *extra):
    out = tmp_path / "m.gguf"
    run("quantize", folder, "-o", out, "--scheme", "q8_0", "--llama-cpp", "--quiet", *extra)
    return gguf.GGUFReader(str(out))


@pytest.mark.parametrize("kind,pre,clean", [("gpt-2", "gpt-2", None), ("starcoder", "starcoder", True), ("starcoder", "smollm", False),
                                            ("llama-bpe", "llama-bpe", None), ("dbrx", "dbrx", None), ("qwen2", "qwen2", False),
                                            ("deepseek-llm", "deepseek-llm", False), ("deepseek-coder", "deepseek-coder", False)])
def test_bpe_tokenizer_equals_convert(tmp_path, kind, pre, clean):
    tok = bpe_tokenizer(kind)
    n = tok.get_vocab_size(with_added_tokens=True) + 5   # config vocab larger than the tokenizer: [PAD] holes
    folder = model_folder(tmp_path / "model", n, eos_token_id=2)
    tok.save(str(folder / "tokenizer.json"))
    tc = {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "chat_template": TEMPLATE, "add_bos_token": True}
    if clean is not None:
        tc["clean_up_tokenization_spaces"] = clean
    json.dump(tc, open(folder / "tokenizer_config.json", "w"))
    got = fields(wtool_gguf(folder, tmp_path), tmp_path, "got")
    want = fields(reference_bpe(folder, n, pre), tmp_path, "want")
    assert got == want
    assert got["tokenizer.ggml.pre"] == pre and len(got["tokenizer.ggml.tokens"]) == n
    assert got["tokenizer.ggml.tokens"][-1] == f"[PAD{n - 1}]" and "my word" in got["tokenizer.ggml.tokens"]
    assert got["tokenizer.chat_template"] == TEMPLATE and got["tokenizer.ggml.add_bos_token"] is True


def test_bpe_merges_as_strings_and_chat_template_file(tmp_path):
    """Older tokenizer.json files write merges as "a b" strings; the template may live in chat_template.jinja."""
    tok = bpe_tokenizer("gpt-2")
    n = tok.get_vocab_size(with_added_tokens=True)
    folder = model_folder(tmp_path / "model", n)
    tok.save(str(folder / "tokenizer.json"))
    j = json.load(open(folder / "tokenizer.json"))
    j["model"]["merges"] = [" ".join(m) for m in j["model"]["merges"]]
    json.dump(j, open(folder / "tokenizer.json", "w"))
    json.dump({"eos_token": {"content": "<|endoftext|>"}}, open(folder / "tokenizer_config.json", "w"))
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    got = fields(wtool_gguf(folder, tmp_path), tmp_path, "got")
    assert got == fields(reference_bpe(folder, n, "gpt-2"), tmp_path, "want")
    assert got["tokenizer.chat_template"] == TEMPLATE and "tokenizer.ggml.eos_token_id" in got


def test_sentencepiece_tokenizer_equals_convert(tmp_path):
    import sentencepiece as spm
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, user_defined_symbols=["<tool>"], character_coverage=1.0,
                                   bos_id=1, eos_id=2, unk_id=0, pad_id=-1, minloglevel=2)
    n = 404
    folder = model_folder(tmp_path / "model", n, bos_token_id=1, eos_token_id=2)
    os.replace(tmp_path / "sp.model", folder / "tokenizer.model")
    json.dump({"<|im_start|>": 400, "<|im_end|>": 401}, open(folder / "added_tokens.json", "w"))
    json.dump({"add_bos_token": True, "add_eos_token": False, "chat_template": TEMPLATE, "add_prefix_space": True,
               "added_tokens_decoder": {"400": {"content": "<|im_start|>", "special": True}, "401": {"content": "<|im_end|>", "special": True},
                                        "402": {"content": "user\u2581word", "special": False}}},
              open(folder / "tokenizer_config.json", "w"))
    r = wtool_gguf(folder, tmp_path)
    got, want = fields(r, tmp_path, "got"), fields(reference_spm(folder, n), tmp_path, "want")
    assert got.pop("tokenizer.ggml.add_space_prefix") is True  # LlamaModel.set_vocab writes it from add_prefix_space
    assert got == want
    assert got["tokenizer.ggml.model"] == "llama" and got["tokenizer.ggml.tokens"][402] == "user word"
    assert gguf.TokenType.BYTE in got["tokenizer.ggml.token_type"]


def test_granite_rule_and_special_ids_from_config(tmp_path):
    """convert writes add_bos_token = false for 49152-token llama vocabularies (SmolLM's size)."""
    tok = bpe_tokenizer("starcoder", size=600)
    folder = model_folder(tmp_path / "model", 49152, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    tok.save(str(folder / "tokenizer.json"))
    json.dump({"add_bos_token": True}, open(folder / "tokenizer_config.json", "w"))
    got = fields(wtool_gguf(folder, tmp_path), tmp_path, "got")
    assert got["tokenizer.ggml.add_bos_token"] is False
    assert got["tokenizer.ggml.bos_token_id"] == 1 and got["tokenizer.ggml.padding_token_id"] == 2


def test_qwen3_names_norms_and_no_permutation(tmp_path):
    tok = bpe_tokenizer("qwen2")
    n = tok.get_vocab_size(with_added_tokens=True)
    folder = model_folder(tmp_path / "model", n, arch="qwen3", head_dim=8, architectures=["Qwen3ForCausalLM"])
    tok.save(str(folder / "tokenizer.json"))
    r = wtool_gguf(folder, tmp_path, "--include", "*proj*")
    t = {x.name: x for x in r.tensors}
    assert t["blk.0.attn_q_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert t["blk.0.attn_k_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert r.fields["general.architecture"].contents() == "qwen3"
    assert "qwen3.vocab_size" not in r.fields and r.fields["qwen3.attention.key_length"].contents() == 8
    from safetensors.numpy import load_file
    q = load_file(str(folder / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    assert np.array(t["blk.0.attn_q.weight"].data).tobytes() == gguf.quantize(q, gguf.GGMLQuantizationType.Q8_0).tobytes()


def test_llama3_rope_freqs_and_yarn_keys(tmp_path):
    tok = bpe_tokenizer("llama-bpe")
    n = tok.get_vocab_size(with_added_tokens=True)
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    folder = model_folder(tmp_path / "l3", n, rope_theta=500000.0, rope_scaling=scaling, head_dim=16, original_max_position_embeddings=64)
    tok.save(str(folder / "tokenizer.json"))
    r = wtool_gguf(folder, tmp_path)
    got = np.array({x.name: x for x in r.tensors}["rope_freqs.weight"].data)
    base, d, L = 500000.0, 16, 64.0
    want = []
    for i in range(0, d, 2):
        wl = 2 * np.pi * base ** (i / d)
        want.append(1.0 if wl < L / 4 else 8.0 if wl > L else 1 / ((1 - (L / wl - 1) / 3) / 8 + (L / wl - 1) / 3))
    assert np.allclose(got, np.array(want, np.float32), rtol=1e-6) and len(set(np.round(got, 4))) > 2
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "beta_fast": 32.0, "beta_slow": 1.0}
    folder = model_folder(tmp_path / "y", n, rope_parameters={"rope_theta": 1e6, **yarn})
    tok.save(str(folder / "tokenizer.json"))
    f = wtool_gguf(folder, tmp_path).fields
    assert f["llama.rope.scaling.type"].contents() == "yarn" and f["llama.rope.scaling.factor"].contents() == 4.0
    assert f["llama.rope.scaling.original_context_length"].contents() == 32 and f["llama.rope.scaling.yarn_beta_fast"].contents() == 32.0
    assert f["llama.rope.freq_base"].contents() == 1e6


def test_float_gguf(tmp_path):
    tok = bpe_tokenizer("gpt-2")
    n = tok.get_vocab_size(with_added_tokens=True)
    folder = model_folder(tmp_path / "model", n)
    tok.save(str(folder / "tokenizer.json"))
    for scheme, qt, ft in [("f16", gguf.GGMLQuantizationType.F16, 1), ("bf16", gguf.GGMLQuantizationType.BF16, 32), ("f32", gguf.GGMLQuantizationType.F32, 0)]:
        out = tmp_path / f"{scheme}.gguf"
        run("quantize", folder, "-o", out, "--scheme", scheme, "--llama-cpp", "--quiet")
        r = gguf.GGUFReader(str(out))
        t = {x.name: x for x in r.tensors}
        assert t["token_embd.weight"].tensor_type == qt and t["blk.0.ffn_down.weight"].tensor_type == qt
        assert t["output_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
        assert r.fields["general.file_type"].contents() == ft
        if scheme == "f16":
            from safetensors.numpy import load_file
            e = load_file(str(folder / "model.safetensors"))["model.embed_tokens.weight"]
            assert np.array(t["token_embd.weight"].data).tobytes() == e.astype(np.float16).tobytes()


@pytest.mark.parametrize("case,needle", [
    ("whitespace", "pre-tokenizer Whitespace is not one llama.cpp is known to reproduce"),
    ("no tokenizer", "has neither tokenizer.json nor tokenizer.model"),
    ("gpt_neox", "model_type 'gpt_neox' is not one --llama-cpp maps"),
    ("rows", "rows but the tokenizer"),
])
def test_unsupported_inputs_are_one_line_and_write_nothing(tmp_path, case, needle):
    tok = bpe_tokenizer("whitespace" if case == "whitespace" else "gpt-2")
    n = tok.get_vocab_size(with_added_tokens=True)
    folder = model_folder(tmp_path / "model", n + 7 if case == "rows" else n, arch="gpt_neox" if case == "gpt_neox" else "llama")
    if case != "no tokenizer":
        tok.save(str(folder / "tokenizer.json"))
    if case == "rows":  # config says n + 7 tokens and so does the embedding: shrink the embedding instead
        from safetensors.numpy import load_file
        t = load_file(str(folder / "model.safetensors")); t["model.embed_tokens.weight"] = t["model.embed_tokens.weight"][:n + 3]
        save_file(t, str(folder / "model.safetensors"))
    out = tmp_path / "out"; out.mkdir()
    code, _, err = run("quantize", folder, "-o", out / "m.gguf", "--scheme", "q8_0", "--llama-cpp", check=False)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(out) == []
    if case in ("whitespace", "no tokenizer"):  # --tokenizer none proceeds without
        run("quantize", folder, "-o", out / "m.gguf", "--scheme", "q8_0", "--llama-cpp", "--tokenizer", "none", "--quiet")
        assert gguf.GGUFReader(str(out / "m.gguf")).fields["tokenizer.ggml.model"].contents() == "none"


def test_tokenizer_option_needs_llama_cpp(tmp_path):
    code, _, err = run("quantize", tmp_path, "-o", tmp_path / "m.gguf", "--scheme", "q8_0", "--tokenizer", "none", check=False)
    assert code == 2 and "--tokenizer applies to --llama-cpp" in err


@pytest.mark.parametrize("case,needle", [
    ("byte_fallback", "byte-fallback (SentencePiece-style) BPE without tokenizer.model"),
    ("bad_json", "tokenizer.json: is not valid JSON"),
    ("no_merges", "has no merges"),
    ("duplicate", "appears twice"),
    ("bad_spm", "is not a SentencePiece model"),
    ("bad_config", "tokenizer_config.json: is not a JSON object"),
])
def test_malformed_tokenizer_files_are_one_line_and_write_nothing(tmp_path, case, needle):
    tok = bpe_tokenizer("gpt-2")
    n = tok.get_vocab_size(with_added_tokens=True)
    folder = model_folder(tmp_path / "model", n)
    tok.save(str(folder / "tokenizer.json"))
    j = json.load(open(folder / "tokenizer.json"))
    if case == "byte_fallback":
        j["model"]["byte_fallback"] = True
    elif case == "no_merges":
        j["model"]["merges"] = []
    elif case == "duplicate":
        j["added_tokens"].append({"id": 5, "content": j["added_tokens"][0]["content"], "special": True})
    json.dump(j, open(folder / "tokenizer.json", "w"))
    if case == "bad_json":
        (folder / "tokenizer.json").write_text('{"model": ')
    if case == "bad_spm":
        (folder / "tokenizer.model").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")   # a length past the end
    if case == "bad_config":
        (folder / "tokenizer_config.json").write_text("[1, 2]")
    out = tmp_path / "out"; out.mkdir()
    code, _, err = run("quantize", folder, "-o", out / "m.gguf", "--scheme", "q8_0", "--llama-cpp", check=False)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(out) == []


@pytest.mark.parametrize("scaling,needle", [
    ({"rope_type": "yarn", "factor": 4.0}, "yarn rope scaling needs 'original_max_position_embeddings'"),
    ({"rope_type": "linear"}, "linear rope scaling needs 'factor'"),
])
def test_incomplete_rope_scaling_is_refused(tmp_path, scaling, needle):
    folder = model_folder(tmp_path / "model", 64, rope_scaling=scaling)
    code, _, err = run("quantize", folder, "-o", tmp_path / "m.gguf", "--scheme", "q8_0", "--llama-cpp", "--tokenizer", "none", check=False)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.gguf").exists()
