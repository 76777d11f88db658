"""A GGUF back into a Hugging Face folder (`wtool convert model.gguf -o DIR`), loaded by the real
consumers: transformers runs the folder to the logits of the original model (float GGUF) or of the
dequantized weights (a GGUF quantized by llama.cpp's own llama_model_quantize), and
AutoTokenizer encodes a corpus like the original tokenizer."""
import ctypes, json

import numpy as np
import pytest

from conftest import wtool, hf_logits
from tokenizer_fixtures import TEMPLATE, bpe_tokenizer, model_folder
from test_llama_cpp import mix_model
from test_llama_cpp_tokenizer import TEXTS


@pytest.mark.parametrize("kind,arch", [("llama-bpe", "llama"), ("qwen2", "qwen2"), ("gpt-2", "llama")])
def test_transformers_loads_the_folder_and_its_tokenizer(tmp_path, kind, arch):
    from transformers import AutoTokenizer
    tok = bpe_tokenizer(kind, size=700)
    folder = model_folder(tmp_path / "m", tok.get_vocab_size(with_added_tokens=True), arch=arch,
                          architectures=["Qwen2ForCausalLM" if arch == "qwen2" else "LlamaForCausalLM"])
    tok.save(str(folder / "tokenizer.json"))
    json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "chat_template": TEMPLATE,
               "clean_up_tokenization_spaces": False}, open(folder / "tokenizer_config.json", "w"))
    wtool("quantize", folder, "-o", tmp_path / "m.gguf", "--scheme", "f32", "--llama-cpp", "--quiet")
    back = tmp_path / "back"
    wtool("convert", tmp_path / "m.gguf", "-o", back, "--quiet")
    np.testing.assert_array_equal(hf_logits(back), hf_logits(folder))
    ours, orig = AutoTokenizer.from_pretrained(str(back)), AutoTokenizer.from_pretrained(str(folder))
    for text in TEXTS:
        assert ours(text, add_special_tokens=False)["input_ids"] == orig(text, add_special_tokens=False)["input_ids"], text
        ids = ours(text, add_special_tokens=False)["input_ids"]
        assert ours.decode(ids) == orig.decode(ids), text
    msgs = [{"role": "user", "content": "hello"}]
    assert ours.apply_chat_template(msgs, tokenize=False) == orig.apply_chat_template(msgs, tokenize=False)
    assert ours.eos_token == "<|im_end|>"


@pytest.mark.parametrize("ftype,expected", [(15, {"Q4_K", "Q6_K"}), (30, {"IQ4_XS"}), (25, {"IQ4_NL"}), (26, {"IQ3_S"}),
                                            (27, {"IQ3_S"})])
def test_llama_model_quantize_output_imports_to_its_dequantization(tmp_path, ftype, expected):
    """A GGUF made by llama.cpp itself (q4_k_m and i-quant mixes): the folder's weights are gguf-py's
    dequantization (Q/K rows un-permuted), and transformers runs it."""
    import gguf, llama_cpp
    from gguf.quants import dequantize
    from safetensors.numpy import load_file
    folder = mix_model(tmp_path / "m", 256, 512, 4, 2, 2, 384, False)
    wtool("quantize", folder, "-o", tmp_path / "f32.gguf", "--scheme", "f32", "--llama-cpp", "--tokenizer", "none", "--quiet")
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = 2
    assert llama_cpp.llama_model_quantize(str(tmp_path / "f32.gguf").encode(), str(tmp_path / "q.gguf").encode(), ctypes.byref(p)) == 0
    back = tmp_path / "back"
    wtool("convert", tmp_path / "q.gguf", "-o", back, "--quiet")
    got = load_file(str(back / "model.safetensors"))
    types = set()
    for t in gguf.GGUFReader(str(tmp_path / "q.gguf")).tensors:
        types.add(t.tensor_type.name)
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = 4 if "attn_q" in t.name else 2
            w = w.reshape(heads, w.shape[0] // heads // 2, 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)
        name = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
                "output_norm.weight": "model.norm.weight"}.get(t.name)
        if name is None:
            l, part = t.name.split(".")[1], t.name.split(".")[2]
            name = f"model.layers.{l}." + {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                                           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                                           "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
                                           "ffn_norm": "post_attention_layernorm"}[part] + ".weight"
        assert got[name].tobytes() == w.reshape(got[name].shape).tobytes(), t.name
    assert expected <= types, types
    logits = hf_logits(back)
    ref = hf_logits(folder)
    cosine = (logits * ref).sum() / np.linalg.norm(logits) / np.linalg.norm(ref)
    assert np.isfinite(logits).all() and cosine > 0.8, cosine


def test_sentencepiece_folder_loads_in_transformers(tmp_path):
    """A SentencePiece llama GGUF: the rebuilt tokenizer.model loads with AutoTokenizer and encodes
    like the original folder's tokenizer; the weights give the original logits."""
    import sentencepiece as spm
    from transformers import AutoTokenizer
    from tokenizer_fixtures import CORPUS
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
                                   pad_id=-1, minloglevel=2, normalization_rule_name="identity", remove_extra_whitespaces=False)
    folder = model_folder(tmp_path / "m", 400, bos_token_id=1, eos_token_id=2)
    (tmp_path / "sp.model").rename(folder / "tokenizer.model")
    json.dump({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "legacy": False, "bos_token": "<s>", "eos_token": "</s>",
               "unk_token": "<unk>"}, open(folder / "tokenizer_config.json", "w"))
    wtool("quantize", folder, "-o", tmp_path / "m.gguf", "--scheme", "f32", "--llama-cpp", "--quiet")
    wtool("convert", tmp_path / "m.gguf", "-o", tmp_path / "back", "--quiet")
    ours, orig = AutoTokenizer.from_pretrained(str(tmp_path / "back")), AutoTokenizer.from_pretrained(str(folder))
    for text in TEXTS:
        assert ours(text)["input_ids"] == orig(text)["input_ids"], text
    np.testing.assert_array_equal(hf_logits(tmp_path / "back"), hf_logits(folder))
