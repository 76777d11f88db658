"""Independent references for permute-match, in numpy + scipy (written from the papers' and
samuela/git-re-basin's descriptions, not from wtool): weight matching on a simple axes spec, a
tiny LLaMA (HF layout: RMSNorm, RoPE with rotate_half, GQA, SwiGLU) with its forward pass, and
random valid permutations of it."""
import json
import os

import numpy as np
from scipy.optimize import linear_sum_assignment
from safetensors.numpy import save_file


def save(params, path):
    """safetensors.numpy writes an array's memory as is: fancy-indexed arrays may be Fortran-ordered."""
    save_file({k: np.ascontiguousarray(v) for k, v in params.items()}, str(path))


def weight_matching(axes, params_a, params_b, seed=0, max_iter=100):
    """Git Re-Basin's coordinate descent: axes[name] = (perm or None per axis); f64 costs."""
    perm_to_axes = {}
    for name, ax in axes.items():
        for k, p in enumerate(ax):
            if p is not None:
                perm_to_axes.setdefault(p, []).append((name, k))
    sizes = {p: params_a[occ[0][0]].shape[occ[0][1]] for p, occ in perm_to_axes.items()}
    perm = {p: np.arange(n) for p, n in sizes.items()}
    names = sorted(perm)
    rng = np.random.default_rng(seed)
    sweeps = 0
    for _ in range(max_iter):
        sweeps += 1
        progress = False
        for p in rng.permutation(names):
            n = sizes[p]
            cost = np.zeros((n, n))
            for t, k in perm_to_axes[p]:
                wa = np.asarray(params_a[t], dtype=np.float64)
                wb = np.asarray(params_b[t], dtype=np.float64)
                for k2, q in enumerate(axes[t]):
                    if k2 != k and q is not None:
                        wb = np.take(wb, perm[q], axis=k2)
                cost += np.moveaxis(wa, k, 0).reshape(n, -1) @ np.moveaxis(wb, k, 0).reshape(n, -1).T
            _, ci = linear_sum_assignment(cost, maximize=True)
            old = cost[np.arange(n), perm[p]].sum()
            new = cost[np.arange(n), ci].sum()
            if new > old + 1e-12 * max(1.0, abs(old)):
                progress = True
                perm[p] = ci
        if not progress:
            break
    return perm, sweeps


def apply_axes(axes, params, perm):
    out = {}
    for name, w in params.items():
        for k, p in enumerate(axes.get(name, ())):
            if p is not None:
                w = np.take(w, perm[p], axis=k)
        out[name] = w
    return out


def mlp_axes(n_layers):
    axes = {}
    for k in range(n_layers):
        out = f"P{k}" if k < n_layers - 1 else None
        axes[f"layers.{k}.weight"] = (out, f"P{k - 1}" if k > 0 else None)
        axes[f"layers.{k}.bias"] = (out,)
    return axes


def mlp_logits(p, x, n_layers=3):
    h = np.asarray(x, dtype=np.float64)
    for k in range(n_layers):
        h = h @ np.asarray(p[f"layers.{k}.weight"], np.float64).T + np.asarray(p[f"layers.{k}.bias"], np.float64)
        if k < n_layers - 1:
            h = np.maximum(h, 0)
    return h


# ---------------------------------------------------------------- tiny LLaMA

LLAMA = dict(vocab=50, d=32, heads=4, kv=2, hd=8, f=48, layers=2, theta=10000.0, eps=1e-6)


def llama_params(seed, cfg=LLAMA, tied=False):
    rng = np.random.default_rng(seed)
    d, h, kv, hd, f = cfg["d"], cfg["heads"], cfg["kv"], cfg["hd"], cfg["f"]
    def w(*s):
        return (rng.normal(size=s) / np.sqrt(s[-1])).astype(np.float32)
    p = {"model.embed_tokens.weight": w(cfg["vocab"], d), "model.norm.weight": (1 + 0.1 * rng.normal(size=d)).astype(np.float32)}
    for l in range(cfg["layers"]):
        q = f"model.layers.{l}."
        p[q + "input_layernorm.weight"] = (1 + 0.1 * rng.normal(size=d)).astype(np.float32)
        p[q + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.normal(size=d)).astype(np.float32)
        p[q + "self_attn.q_proj.weight"] = w(h * hd, d)
        p[q + "self_attn.k_proj.weight"] = w(kv * hd, d)
        p[q + "self_attn.v_proj.weight"] = w(kv * hd, d)
        p[q + "self_attn.o_proj.weight"] = w(d, h * hd)
        p[q + "mlp.gate_proj.weight"] = w(f, d)
        p[q + "mlp.up_proj.weight"] = w(f, d)
        p[q + "mlp.down_proj.weight"] = w(d, f)
    if not tied:
        p["lm_head.weight"] = w(cfg["vocab"], d)
    return p


def llama_config(cfg=LLAMA, tied=False):
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": cfg["d"],
            "intermediate_size": cfg["f"], "num_attention_heads": cfg["heads"], "num_key_value_heads": cfg["kv"],
            "num_hidden_layers": cfg["layers"], "vocab_size": cfg["vocab"], "rms_norm_eps": cfg["eps"],
            "rope_theta": cfg["theta"], "tie_word_embeddings": tied, "head_dim": cfg["hd"]}


def save_llama(folder, params, cfg=LLAMA, tied=False):
    os.makedirs(folder, exist_ok=True)
    save(params, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(llama_config(cfg, tied), fh)


def llama_logits(p, tokens, cfg=LLAMA):
    P = {k: np.asarray(v, np.float64) for k, v in p.items()}
    d, H, KV, hd = cfg["d"], cfg["heads"], cfg["kv"], cfg["hd"]
    rep = H // KV
    T = len(tokens)

    def rms(x, w):
        return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + cfg["eps"]) * w

    inv = 1.0 / cfg["theta"] ** (np.arange(0, hd, 2) / hd)
    ang = np.outer(np.arange(T), inv)
    cos = np.cos(np.concatenate([ang, ang], -1))
    sin = np.sin(np.concatenate([ang, ang], -1))

    def rope(x):  # (heads, T, hd)
        half = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return x * cos + half * sin

    h = P["model.embed_tokens.weight"][tokens]
    for l in range(cfg["layers"]):
        q = f"model.layers.{l}."
        x = rms(h, P[q + "input_layernorm.weight"])
        Q = rope((x @ P[q + "self_attn.q_proj.weight"].T).reshape(T, H, hd).transpose(1, 0, 2))
        K = rope((x @ P[q + "self_attn.k_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2))
        V = (x @ P[q + "self_attn.v_proj.weight"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        K, V = np.repeat(K, rep, axis=0), np.repeat(V, rep, axis=0)
        s = Q @ K.transpose(0, 2, 1) / np.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ V).transpose(1, 0, 2).reshape(T, H * hd)
        h = h + o @ P[q + "self_attn.o_proj.weight"].T
        x = rms(h, P[q + "post_attention_layernorm.weight"])
        g = x @ P[q + "mlp.gate_proj.weight"].T
        h = h + ((g / (1 + np.exp(-g))) * (x @ P[q + "mlp.up_proj.weight"].T)) @ P[q + "mlp.down_proj.weight"].T
    head = P.get("lm_head.weight", P["model.embed_tokens.weight"])
    return rms(h, P["model.norm.weight"]) @ head.T


def llama_permute(p, seed, cfg=LLAMA, qk_dims=False, skip_norms=False):
    """A random permutation of the tiny LLaMA: valid (residual with every norm, MLP, KV groups,
    query heads inside their group, V/O dims inside a head) unless asked to break it."""
    rng = np.random.default_rng(seed)
    d, H, KV, hd = cfg["d"], cfg["heads"], cfg["kv"], cfg["hd"]
    rep = H // KV
    res = rng.permutation(d)
    out = {}
    for name, w in p.items():
        w = w.copy()
        if name.endswith("norm.weight") and not skip_norms:
            w = w[res]
        elif name == "model.embed_tokens.weight" or name == "lm_head.weight":
            w = w[:, res]
        out[name] = w
    for l in range(cfg["layers"]):
        q = f"model.layers.{l}."
        mlp = rng.permutation(cfg["f"])
        kv = rng.permutation(KV)
        qg = [rng.permutation(rep) for _ in range(KV)]
        vd = [rng.permutation(hd) for _ in range(KV)]
        inner = rng.permutation(hd) if qk_dims else np.arange(hd)
        q_rows = [(kv[g] * rep + qg[kv[g]][r]) * hd + inner[e] for g in range(KV) for r in range(rep) for e in range(hd)]
        k_rows = [kv[g] * hd + inner[e] for g in range(KV) for e in range(hd)]
        v_rows = [kv[g] * hd + vd[kv[g]][e] for g in range(KV) for e in range(hd)]
        o_cols = [(kv[g] * rep + qg[kv[g]][r]) * hd + vd[kv[g]][e] for g in range(KV) for r in range(rep) for e in range(hd)]
        out[q + "self_attn.q_proj.weight"] = out[q + "self_attn.q_proj.weight"][q_rows][:, res]
        out[q + "self_attn.k_proj.weight"] = out[q + "self_attn.k_proj.weight"][k_rows][:, res]
        out[q + "self_attn.v_proj.weight"] = out[q + "self_attn.v_proj.weight"][v_rows][:, res]
        out[q + "self_attn.o_proj.weight"] = out[q + "self_attn.o_proj.weight"][res][:, o_cols]
        out[q + "mlp.gate_proj.weight"] = out[q + "mlp.gate_proj.weight"][mlp][:, res]
        out[q + "mlp.up_proj.weight"] = out[q + "mlp.up_proj.weight"][mlp][:, res]
        out[q + "mlp.down_proj.weight"] = out[q + "mlp.down_proj.weight"][res][:, mlp]
    return out


# ---------------------------------------------------------------- tiny GPT-2 and BERT

GPT2 = dict(vocab=30, d=16, heads=4, layers=2, positions=8, inner=32)


def gpt2_params(seed, cfg=GPT2):
    rng = np.random.default_rng(seed)
    d, f = cfg["d"], cfg["inner"]
    def w(*s):
        return (rng.normal(size=s) / np.sqrt(s[0])).astype(np.float32)
    def v(n, base=0.0):
        return (base + 0.1 * rng.normal(size=n)).astype(np.float32)
    p = {"wte.weight": w(cfg["vocab"], d), "wpe.weight": w(cfg["positions"], d), "ln_f.weight": v(d, 1), "ln_f.bias": v(d)}
    for l in range(cfg["layers"]):
        q = f"h.{l}."
        p.update({q + "ln_1.weight": v(d, 1), q + "ln_1.bias": v(d), q + "ln_2.weight": v(d, 1), q + "ln_2.bias": v(d),
                  q + "attn.c_attn.weight": w(d, 3 * d), q + "attn.c_attn.bias": v(3 * d),
                  q + "attn.c_proj.weight": w(d, d), q + "attn.c_proj.bias": v(d),
                  q + "mlp.c_fc.weight": w(d, f), q + "mlp.c_fc.bias": v(f),
                  q + "mlp.c_proj.weight": w(f, d), q + "mlp.c_proj.bias": v(d)})
    return p


def save_gpt2(folder, params, cfg=GPT2):
    os.makedirs(folder, exist_ok=True)
    save(params, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump({"model_type": "gpt2", "n_embd": cfg["d"], "n_head": cfg["heads"], "n_layer": cfg["layers"],
                   "n_positions": cfg["positions"], "vocab_size": cfg["vocab"], "n_inner": cfg["inner"]}, fh)


def gpt2_logits(p, tokens, cfg=GPT2):
    """HF GPT-2: Conv1D weights (in, out), pre-LN, fused QKV, gelu (tanh), lm_head tied to wte."""
    P = {k: np.asarray(v, np.float64) for k, v in p.items()}
    d, H = cfg["d"], cfg["heads"]
    hd, T = d // H, len(tokens)

    def ln(x, w, b):
        m = x.mean(-1, keepdims=True)
        return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-5) * w + b

    h = P["wte.weight"][tokens] + P["wpe.weight"][:T]
    for l in range(cfg["layers"]):
        q = f"h.{l}."
        x = ln(h, P[q + "ln_1.weight"], P[q + "ln_1.bias"])
        qkv = x @ P[q + "attn.c_attn.weight"] + P[q + "attn.c_attn.bias"]
        Q, K, V = (qkv[:, i * d:(i + 1) * d].reshape(T, H, hd).transpose(1, 0, 2) for i in range(3))
        s = Q @ K.transpose(0, 2, 1) / np.sqrt(hd) + np.triu(np.full((T, T), -np.inf), 1)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ V).transpose(1, 0, 2).reshape(T, d)
        h = h + o @ P[q + "attn.c_proj.weight"] + P[q + "attn.c_proj.bias"]
        x = ln(h, P[q + "ln_2.weight"], P[q + "ln_2.bias"])
        u = x @ P[q + "mlp.c_fc.weight"] + P[q + "mlp.c_fc.bias"]
        g = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
        h = h + g @ P[q + "mlp.c_proj.weight"] + P[q + "mlp.c_proj.bias"]
    return ln(h, P["ln_f.weight"], P["ln_f.bias"]) @ P["wte.weight"].T


def save_bert(folder, seed, d=16, heads=4, layers=2, inner=32, vocab=30):
    rng = np.random.default_rng(seed)
    def w(*s):
        return (rng.normal(size=s) / np.sqrt(s[-1])).astype(np.float32)
    def v(n, base=0.0):
        return (base + 0.1 * rng.normal(size=n)).astype(np.float32)
    p = {"bert.embeddings.word_embeddings.weight": w(vocab, d), "bert.embeddings.position_embeddings.weight": w(8, d),
         "bert.embeddings.token_type_embeddings.weight": w(2, d), "bert.embeddings.LayerNorm.weight": v(d, 1),
         "bert.embeddings.LayerNorm.bias": v(d), "bert.embeddings.position_ids": np.arange(8, dtype=np.int64)[None],
         "bert.pooler.dense.weight": w(d, d), "bert.pooler.dense.bias": v(d),
         "cls.predictions.transform.dense.weight": w(d, d), "cls.predictions.transform.dense.bias": v(d),
         "cls.predictions.transform.LayerNorm.weight": v(d, 1), "cls.predictions.transform.LayerNorm.bias": v(d),
         "cls.predictions.bias": v(vocab), "cls.seq_relationship.weight": w(2, d), "cls.seq_relationship.bias": v(2)}
    for l in range(layers):
        q = f"bert.encoder.layer.{l}."
        for n in ("query", "key", "value"):
            p[q + f"attention.self.{n}.weight"] = w(d, d)
            p[q + f"attention.self.{n}.bias"] = v(d)
        p.update({q + "attention.output.dense.weight": w(d, d), q + "attention.output.dense.bias": v(d),
                  q + "attention.output.LayerNorm.weight": v(d, 1), q + "attention.output.LayerNorm.bias": v(d),
                  q + "intermediate.dense.weight": w(inner, d), q + "intermediate.dense.bias": v(inner),
                  q + "output.dense.weight": w(d, inner), q + "output.dense.bias": v(d),
                  q + "output.LayerNorm.weight": v(d, 1), q + "output.LayerNorm.bias": v(d)})
    os.makedirs(folder, exist_ok=True)
    save(p, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump({"model_type": "bert", "hidden_size": d, "num_attention_heads": heads, "num_hidden_layers": layers,
                   "intermediate_size": inner, "vocab_size": vocab}, fh)
    return p
