"""Small tokenizer folders trained in a test (byte-level BPE with the `tokenizers` package) and tiny
LLaMA-shaped models around them, shared by the interop tests and the llama.cpp client tests."""
import json
import numpy as np
from safetensors.numpy import save_file

CORPUS = ["The capital of France is Paris.", "I've been 'told he's there, 'RE you sure?", "3 33 333 3333 3.14 $3.50",
          "Ünïcödé àccents, 中文字符, emoji 🙂🚀", "def f(x):\n    return x ** 2\n\n", "  leading spaces\tand\ttabs\n\n\n",
          "<|im_start|>user\nhello<|im_end|>", "naïve café résumé Ελληνικά кириллица", "1234567890 0x1F 1e-5"] * 20

LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def bpe_tokenizer(kind, size=400):
    from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, trainers
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama-bpe")))
    if kind == "gpt-2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif kind == "starcoder":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    elif kind in ("llama-bpe", "dbrx", "qwen2"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2 if kind == "qwen2" else LLAMA3), "isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "deepseek-llm":   # the chain's shape, with a shortened letter class and CJK range
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex("[\r\n]"), "isolated"), pre_tokenizers.Split(Regex(r"\s?[A-Za-zµÀ-ÖØ-öø-ƺ]+"), "isolated"),
            pre_tokenizers.Split(Regex(r"\s?[!-/:-~！-／：-～‘-‟　-。]+"), "isolated"), pre_tokenizers.Split(Regex(r"\s+$"), "isolated"),
            pre_tokenizers.Split(Regex("[一-龥ࠀ-一가-퟿]+"), "isolated"), pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "deepseek-coder":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex("[\r\n]"), "isolated"), pre_tokenizers.Split(Regex(r"\s?\p{L}+"), "isolated"),
            pre_tokenizers.Split(Regex(r"\s?\p{P}+"), "isolated"), pre_tokenizers.Split(Regex("[一-龥ࠀ-一가-퟿]+"), "isolated"),
            pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif kind == "whitespace":
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(CORPUS, trainer)
    tok.add_tokens(["<tool>", "my\u2581word"])  # user-defined added tokens (one with a SentencePiece space)
    tok.add_special_tokens(["<extra_special>"])
    return tok


def model_folder(path, vocab, arch="llama", peaked=False, **config):
    """A one-layer model of `vocab` tokens (tied embeddings); peaked: embeddings scaled up so greedy
    decoding has clear winners (quantization noise must not flip an argmax)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": arch, "hidden_size": 32, "intermediate_size": 64,
           "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 1, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "max_position_embeddings": 128, "vocab_size": vocab, "tie_word_embeddings": True}
    cfg.update(config)
    json.dump(cfg, open(path / "config.json", "w"))
    rng = np.random.default_rng(0)
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, 32)).astype(np.float32) * (3 if peaked else 1),
         "model.norm.weight": np.ones(32, np.float32)}
    for p, shape in [("self_attn.q_proj", (32, 32)), ("self_attn.k_proj", (16, 32)), ("self_attn.v_proj", (16, 32)),
                     ("self_attn.o_proj", (32, 32)), ("mlp.gate_proj", (64, 32)), ("mlp.up_proj", (64, 32)), ("mlp.down_proj", (32, 64))]:
        t[f"model.layers.0.{p}.weight"] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)  # a trained model's scale
    t["model.layers.0.input_layernorm.weight"] = np.ones(32, np.float32)
    t["model.layers.0.post_attention_layernorm.weight"] = np.ones(32, np.float32)
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = rng.standard_normal((vocab, 32)).astype(np.float32) * (3 if peaked else 1)
    if arch == "qwen3":
        t["model.layers.0.self_attn.q_norm.weight"] = np.ones(8, np.float32)
        t["model.layers.0.self_attn.k_norm.weight"] = np.ones(8, np.float32)
    save_file(t, str(path / "model.safetensors"))
    return path


