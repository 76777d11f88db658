"""llama.cpp reads the tokenizer wtool writes into a --llama-cpp GGUF: it tokenizes a corpus to the
ids the source folder's own tokenizer gives (byte-level BPE through `tokenizers`, SentencePiece
through `sentencepiece`), and a chat prompt rendered with the GGUF's template generates, greedily,
the tokens transformers generates on the same weights."""
import json, os
import numpy as np
import pytest
from conftest import wtool
from tokenizer_fixtures import CORPUS, TEMPLATE, bpe_tokenizer, model_folder

TEXTS = ["The capital of France is", "Hello world", "  two leading spaces", "tabs\tand\nnewlines\n\n\nend",
         "naïve café, Ελληνικά, кириллица", "中文字符 and 日本語", "emoji 🙂🚀 done", "def f(x):\n    return x ** 2",
         "3 33 333 3333 12345 3.14", "٣٤٥ arabic-indic digits", "I've been 'told he's there", "<|im_start|>user\nhi<|im_end|>",
         "   ", "a" * 50, "MiXeD CaSe WoRdS"]


def llama_tokens(path, text):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return llm.tokenize(text.encode(), add_bos=False, special=True)


@pytest.mark.parametrize("kind", ["llama-bpe", "qwen2", "gpt-2", "starcoder"])
def test_llama_cpp_tokenizes_like_the_bpe_tokenizer(tmp_path, kind):
    tok = bpe_tokenizer(kind, size=700)
    n = tok.get_vocab_size(with_added_tokens=True)
    folder = model_folder(tmp_path / "m", n)
    tok.save(str(folder / "tokenizer.json"))
    json.dump({"clean_up_tokenization_spaces": False}, open(folder / "tokenizer_config.json", "w"))
    wtool("quantize", folder, "-o", tmp_path / "m.gguf", "--scheme", "f16", "--llama-cpp", "--quiet")
    for text in TEXTS:
        assert llama_tokens(tmp_path / "m.gguf", text) == tok.encode(text, add_special_tokens=False).ids, (kind, text)


def test_llama_cpp_tokenizes_like_sentencepiece(tmp_path):
    import sentencepiece as spm
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS))
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=400,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0,
                                   pad_id=-1, minloglevel=2, normalization_rule_name="identity", remove_extra_whitespaces=False)
    # (LLaMA's and Mistral's tokenizer.model normalize nothing; llama.cpp's SPM tokenizer does not either)
    folder = model_folder(tmp_path / "m", 400, bos_token_id=1, eos_token_id=2)
    os.replace(tmp_path / "sp.model", folder / "tokenizer.model")
    json.dump({"add_bos_token": True}, open(folder / "tokenizer_config.json", "w"))
    wtool("quantize", folder, "-o", tmp_path / "m.gguf", "--scheme", "f16", "--llama-cpp", "--quiet")
    sp = spm.SentencePieceProcessor(); sp.LoadFromFile(str(folder / "tokenizer.model"))
    for text in TEXTS[:-4] + TEXTS[-2:]:
        assert llama_tokens(tmp_path / "m.gguf", text) == sp.encode(text), text


def test_chat_generation_matches_transformers(tmp_path):
    """A q8_0 GGUF with the tokenizer and chat template: llama.cpp renders the chat, tokenizes and
    generates 16 tokens greedily; transformers, on wtool's fake-quantized weights of the same q8_0
    policy (--format fake --llama-cpp), generates from the same prompt ids the same tokens."""
    import llama_cpp
    tok = bpe_tokenizer("llama-bpe", size=700)
    n = tok.get_vocab_size(with_added_tokens=True)
    folder = model_folder(tmp_path / "m", n, eos_token_id=2, bos_token_id=0, peaked=True, tie_word_embeddings=False)
    tok.save(str(folder / "tokenizer.json"))
    json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "chat_template": TEMPLATE, "add_bos_token": False},
              open(folder / "tokenizer_config.json", "w"))
    wtool("quantize", folder, "-o", tmp_path / "m.gguf", "--scheme", "q8_0", "--llama-cpp", "--quiet")
    wtool("quantize", folder, "-o", tmp_path / "fake", "--scheme", "q8_0", "--format", "fake", "--llama-cpp", "--quiet")
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=128, verbose=False)
    assert llm.metadata["tokenizer.chat_template"] == TEMPLATE
    from jinja2 import Template
    prompt = Template(llm.metadata["tokenizer.chat_template"]).render(messages=[{"role": "user", "content": "The capital of France is"}])
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    assert ids == tok.encode(prompt, add_special_tokens=False).ids
    got = []
    for t in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0):
        got.append(t)
        if len(got) == 16:
            break
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(str(tmp_path / "fake"), dtype=torch.float32)
    with torch.no_grad():
        want = m.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    assert got == want
