"""wtool quantize against independent references: gguf-py's quantizers (bit-exact block formats),
its dequantizers (K-quants, decoding), numpy transcriptions of compressed-tensors' RTN and packing,
BitNet's ternary rule and ml_dtypes' float8_e4m3fn."""
import json, os
import numpy as np
import ml_dtypes
import pytest
import gguf
from safetensors.numpy import load_file, save_file
from conftest import run, FIX

LEGACY = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "tq1_0", "tq2_0"]
ALL_GGML = LEGACY + ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
QUANT = os.path.join(FIX, "quant", "weights.safetensors")
QUANT_BF16 = os.path.join(FIX, "quant", "weights-bf16.safetensors")


def qtype(name):
    return getattr(gguf.GGMLQuantizationType, name.upper())


def sqnr(ref, got):
    ref = ref.astype(np.float64); got = got.astype(np.float64)
    return 10 * np.log10((ref ** 2).sum() / ((ref - got) ** 2).sum())


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    """The acceptance data of the reference (§7.1) at 67 rows (odd), with outliers, an all-zero
    row, tie rows and values near the f32 underflow."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((67, 1024)).astype(np.float32)
    x[0] = 0
    x[1, :32] = np.arange(32) - 15.5
    x[2, :32] = 1; x[2, 31] = -1
    x[3, ::97] *= 100
    x[4, :256] = 1e-30
    x[5, 256:512] = np.where(rng.random(256) < 0.5, -0.5, 0.5)
    p = tmp_path_factory.mktemp("hard") / "x.safetensors"
    save_file({"layer.weight": x, "layer.bias": np.ones(1024, np.float32)}, str(p))
    return p, x


def gguf_tensor(path, name):
    r = gguf.GGUFReader(str(path))
    return r, next(t for t in r.tensors if t.name == name)


@pytest.mark.parametrize("t", LEGACY)
def test_block_formats_are_byte_identical_with_gguf_py(hard, tmp_path, t):
    p, x = hard
    out = tmp_path / f"{t}.gguf"
    run("quantize", p, "-o", out, "--scheme", t, "--quiet")
    _, ten = gguf_tensor(out, "layer.weight")
    assert ten.tensor_type == qtype(t)
    assert [int(v) for v in ten.shape] == [1024, 67]  # ne[] is the numpy shape reversed
    got = np.array(ten.data).tobytes()
    assert got == gguf.quantize(x, qtype(t)).tobytes()


@pytest.mark.parametrize("t", LEGACY)
def test_subnormal_scales_quantize_to_zero(tmp_path, t):
    """Blocks whose scale is subnormal (1/d overflows; wtool 0.x trapped on TQ1_0 here) encode
    without error, store an f16 zero scale and decode to zeros; the normal rows beside them stay
    byte-identical with gguf-py. (The codes of those blocks follow ggml's compiled casts: checked
    against ggml itself in the client suite.)"""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 512)).astype(np.float32)
    x[1] = 1e-40; x[2, :256] = np.where(np.arange(256) % 3 == 0, -3e-39, 2e-39)
    save_file({"layer.weight": x}, str(tmp_path / "x.safetensors"))
    run("quantize", tmp_path / "x.safetensors", "-o", tmp_path / "x.gguf", "--scheme", t, "--quiet")
    _, ten = gguf_tensor(tmp_path / "x.gguf", "layer.weight")
    back = gguf.dequantize(np.array(ten.data), qtype(t)).reshape(x.shape)
    assert not back[1].any() and not back[2, :256].any()
    rows = np.array(ten.data).reshape(4, -1)
    assert rows[[0, 3]].tobytes() == gguf.quantize(x[[0, 3]], qtype(t)).tobytes()


@pytest.mark.parametrize("t", ALL_GGML)
def test_dequantize_matches_gguf_py_bitwise(hard, tmp_path, t):
    p, x = hard
    out = tmp_path / f"{t}.gguf"
    run("quantize", p, "-o", out, "--scheme", t, "--quiet")
    _, ten = gguf_tensor(out, "layer.weight")
    ref = gguf.dequantize(np.array(ten.data), qtype(t)).reshape(x.shape)
    run("quantize", "--dequantize", out, "-o", tmp_path / "back.safetensors", "--quiet")
    back = load_file(str(tmp_path / "back.safetensors"))
    assert back["layer.weight"].dtype == np.float32
    assert back["layer.weight"].tobytes() == ref.astype(np.float32).tobytes()
    np.testing.assert_array_equal(back["layer.bias"], np.ones(1024, np.float32))
    # the fake format decodes with the same decoder
    run("quantize", p, "-o", tmp_path / "fake.safetensors", "--scheme", t, "--format", "fake", "--quiet")
    assert load_file(str(tmp_path / "fake.safetensors"))["layer.weight"].tobytes() == ref.astype(np.float32).tobytes()


def test_kquants_match_the_c_reference_error_and_beat_legacy(tmp_path):
    # Rows 5.. of default_rng(0).standard_normal((256, 4096)): the reference's measured SQNR of
    # ggml's C encoders (Q4_K 22.94, Q6_K 35.03 dB; Q4_0 21.31, Q5_0 27.39).
    x = np.random.default_rng(0).standard_normal((256, 4096)).astype(np.float32)[5:]
    p = tmp_path / "k.safetensors"
    save_file({"w.weight": x}, str(p))
    got = {}
    for t in ["q4_k", "q6_k", "q4_0", "q5_0"]:
        run("quantize", p, "-o", tmp_path / f"{t}.gguf", "--scheme", t, "--quiet")
        _, ten = gguf_tensor(tmp_path / f"{t}.gguf", "w.weight")
        got[t] = sqnr(x, gguf.dequantize(np.array(ten.data), qtype(t)).reshape(x.shape))
    assert abs(got["q4_k"] - 22.94) < 0.05 and abs(got["q6_k"] - 35.03) < 0.05, got
    assert got["q4_k"] > got["q4_0"] and got["q6_k"] > got["q5_0"], got


def test_kquant_ladder(tmp_path):
    """Each K type adds about a bit: ~6 dB per bit on Gaussian weights, in order (the bytes are
    checked against ggml's own C encoders in make test-clients)."""
    x = np.random.default_rng(1).standard_normal((32, 2048)).astype(np.float32)
    p = tmp_path / "k.safetensors"
    save_file({"w.weight": x}, str(p))
    got = []
    for t in ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]:
        run("quantize", p, "-o", tmp_path / f"{t}.gguf", "--scheme", t, "--quiet")
        _, ten = gguf_tensor(tmp_path / f"{t}.gguf", "w.weight")
        got.append(sqnr(x, gguf.dequantize(np.array(ten.data), qtype(t)).reshape(x.shape)))
    steps = np.diff(got)
    assert np.all(steps > 4) and np.all(steps < 8), got


def test_gguf_container_and_report(hard, tmp_path):
    p, x = hard
    out = tmp_path / "m.gguf"
    run("quantize", QUANT, "-o", out, "--scheme", "q4_0", "--threads", "2", "--quiet")
    r = gguf.GGUFReader(str(out))
    fields = {k: f for k, f in r.fields.items()}
    assert int(fields["general.quantization_version"].parts[-1][0]) == 2
    assert int(fields["general.file_type"].parts[-1][0]) == 2  # MOSTLY_Q4_0
    src = load_file(QUANT)
    assert [t.name for t in r.tensors] == sorted(src)  # names kept as given, in the input's order
    types = {t.name: t.tensor_type for t in r.tensors}
    assert types["model.layers.0.mlp.up_proj.weight"] == gguf.GGMLQuantizationType.Q4_0
    assert types["model.layers.0.input_layernorm.weight"] == gguf.GGMLQuantizationType.F32
    assert types["model.embed_tokens.weight"] == gguf.GGMLQuantizationType.F32
    assert types["model.layers.0.self_attn.odd_proj.weight"] == gguf.GGMLQuantizationType.F32  # 100 % 32 != 0
    # ggml's loader: data contiguous in table order, each tensor aligned to 32
    offsets = [int(t.data_offset) for t in r.tensors]
    assert all(o % 32 == 0 for o in offsets) and offsets == sorted(offsets)
    for t in r.tensors:
        if t.tensor_type == gguf.GGMLQuantizationType.F32:
            np.testing.assert_array_equal(np.array(t.data).reshape(src[t.name].shape), src[t.name])
    rep = json.load(open(tmp_path / "m.report.json"))
    rows = {t["name"]: t for t in rep["tensors"]}
    odd = rows["model.layers.0.self_attn.odd_proj.weight"]
    assert odd["quantized"] is False and "not a multiple" in odd["kept_reason"]
    up = rows["model.layers.0.mlp.up_proj.weight"]
    assert up["bits_per_weight"] == 4.5 and up["bytes_out"] == 128 * 512 // 32 * 18
    deq = gguf.dequantize(np.array(next(t for t in r.tensors if t.name == up["name"]).data), qtype("q4_0")).reshape(128, 512)
    ref = src[up["name"]]
    assert abs(up["sqnr_db"] - sqnr(ref, deq)) < 1e-6
    assert abs(up["mse"] - ((ref.astype(np.float64) - deq) ** 2).mean()) < 1e-12
    assert abs(up["max_abs_error"] - np.abs(ref.astype(np.float64) - deq).max()) < 1e-9
    assert rep["summary"]["quantized"] == 3 and rep["summary"]["kept"] == 3


def llama_permute(w, heads):
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_llama_cpp_export(tmp_path):
    base = os.path.join(FIX, "tiny-llama", "base")
    out = tmp_path / "llama.gguf"
    run("quantize", base, "-o", out, "--scheme", "q8_0", "--llama-cpp", "--tokenizer", "none", "--quiet")
    r = gguf.GGUFReader(str(out))
    f = r.fields
    val = lambda k: f[k].parts[-1][0] if f[k].types[0] != gguf.GGUFValueType.STRING else bytes(f[k].parts[-1]).decode()
    assert val("general.architecture") == "llama" and val("tokenizer.ggml.model") == "none"
    assert int(val("llama.block_count")) == 2 and int(val("llama.attention.head_count")) == 4
    assert int(val("llama.attention.head_count_kv")) == 2 and int(val("llama.embedding_length")) == 32
    assert abs(float(val("llama.attention.layer_norm_rms_epsilon")) - 1e-5) < 1e-12
    src = load_file(os.path.join(base, "model.safetensors"))
    t = {x.name: x for x in r.tensors}
    assert "token_embd.weight" in t and "output.weight" in t and "blk.1.ffn_down.weight" in t
    q = t["blk.0.attn_q.weight"]
    assert np.array(q.data).tobytes() == gguf.quantize(llama_permute(src["model.layers.0.self_attn.q_proj.weight"], 4), qtype("q8_0")).tobytes()
    k = t["blk.0.attn_k.weight"]
    assert np.array(k.data).tobytes() == gguf.quantize(llama_permute(src["model.layers.0.self_attn.k_proj.weight"], 2), qtype("q8_0")).tobytes()
    v = t["blk.0.attn_v.weight"]
    assert np.array(v.data).tobytes() == gguf.quantize(src["model.layers.0.self_attn.v_proj.weight"], qtype("q8_0")).tobytes()


# ---- compressed-tensors conventions, transcribed from the format's documentation (reference §2.1, §3.1)

def rtn_reference(w, bits, group, symmetric, scale_dtype=np.float32):
    """compressed-tensors RTN: range includes 0; sym scale amax/((2^b-1)/2); asym zero point;
    scale rounded to its storage dtype before use; q = clamp(round_half_even(w/s + z))."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    rows, cols = w.shape
    g = cols if group is None else group
    x = w.reshape(-1, g)
    lo = np.minimum(x.min(1, keepdims=True), 0); hi = np.maximum(x.max(1, keepdims=True), 0)
    if symmetric:
        s = np.maximum(-lo, hi) / np.float32((qmax - qmin) / 2)
    else:
        s = (hi - lo) / np.float32(qmax - qmin)
    eps = np.finfo(scale_dtype).eps if scale_dtype != ml_dtypes.bfloat16 else np.float32(2 ** -7)
    s = np.where(s == 0, np.float32(eps), s).astype(scale_dtype).astype(np.float32)
    z = np.zeros_like(s) if symmetric else np.clip(np.round(qmin - lo / s), qmin, qmax).astype(np.float32)
    q = np.clip(np.round(x / s + z), qmin, qmax)
    deq = ((q - z) * s).astype(np.float32)
    return q.astype(np.int8).reshape(rows, cols), s.reshape(rows, -1), z.reshape(rows, -1), deq.reshape(rows, cols)


def pack_reference(q, bits):
    """Dense LSB-first bit stream per row, offset to unsigned, ceil(cols*b/32) int32 words."""
    rows, cols = q.shape
    u = (q.astype(np.int64) + 2 ** (bits - 1)).astype(np.uint64)
    words = (cols * bits + 31) // 32
    out = np.zeros((rows, words), np.uint64)
    for c in range(cols):
        bit = c * bits; w, sh = divmod(bit, 32)
        out[:, w] |= (u[:, c] << np.uint64(sh)) & np.uint64(0xFFFFFFFF)
        if sh + bits > 32:
            out[:, w + 1] |= u[:, c] >> np.uint64(32 - sh)
    return out.astype(np.uint32).view(np.int32)


def test_pack_reference_matches_the_documented_example():
    row = np.array([[4, -2, -1, 0, -1, 7, 0, -1]], np.int8)
    assert pack_reference(row, 4)[0, 0].view(np.uint32) == 0x78F7876C
    legacy = np.zeros(1, np.uint32)  # b = 4: identical to 8 values per word
    for i, v in enumerate(row[0]): legacy[0] |= np.uint32((int(v) + 8) << (4 * i))
    assert legacy[0] == 0x78F7876C


@pytest.mark.parametrize("bits,group,symmetric", [(4, 128, True), (4, 128, False), (8, None, True), (4, 32, True), (3, 64, False), (2, 128, True)])
def test_rtn_matches_numpy_reference(tmp_path, bits, group, symmetric):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((256, 1024)).astype(np.float32)
    w[7] = 0  # all-zero groups: scale = eps, q = 0
    p = tmp_path / "w.safetensors"
    save_file({"proj.weight": w}, str(p))
    args = ["--scheme", f"int{bits}", "--asymmetric" if not symmetric else "--symmetric", "--quiet"]
    args += ["--granularity", "channel"] if group is None else ["--group-size", group]
    run("quantize", p, "-o", tmp_path / "fake.safetensors", "--format", "fake", *args)
    run("quantize", p, "-o", tmp_path / "ct", "--format", "compressed-tensors", *args)
    q, s, z, deq = rtn_reference(w, bits, group, symmetric)
    fake = load_file(str(tmp_path / "fake.safetensors"))["proj.weight"]
    np.testing.assert_array_equal(fake, deq)
    rep = json.load(open(tmp_path / "fake.report.json"))["tensors"][0]
    assert abs(rep["sqnr_db"] - sqnr(w, deq)) < 0.01
    ct = load_file(str(tmp_path / "ct" / "model.safetensors"))
    assert ct["proj.weight_packed"].dtype == np.int32 and ct["proj.weight_packed"].shape == (256, (1024 * bits + 31) // 32)
    np.testing.assert_array_equal(ct["proj.weight_packed"], pack_reference(q, bits))
    np.testing.assert_array_equal(ct["proj.weight_shape"], [256, 1024])
    np.testing.assert_array_equal(ct["proj.weight_scale"], s)
    assert "proj.weight" not in ct
    if symmetric:
        assert "proj.weight_zero_point" not in ct
    else:  # zero points packed along dim 0
        np.testing.assert_array_equal(ct["proj.weight_zero_point"], pack_reference(z.astype(np.int8).T, bits).T)
    run("quantize", "--dequantize", tmp_path / "ct", "-o", tmp_path / "back.safetensors", "--quiet")
    np.testing.assert_array_equal(load_file(str(tmp_path / "back.safetensors"))["proj.weight"], deq)


def test_rtn_error_on_gaussian_matches_reference_figures(tmp_path):
    # reference §2.1 (4096 x 4096): int4 sym g128 19.11 dB, asym 19.95, per-channel 16.65; theory 19.18.
    w = np.random.default_rng(0).standard_normal((1024, 4096)).astype(np.float32)
    p = tmp_path / "g.safetensors"
    save_file({"g.weight": w}, str(p))
    for extra, want in [([], 19.11), (["--asymmetric"], 19.95), (["--granularity", "channel"], 16.65)]:
        run("quantize", p, "-o", tmp_path / "f.safetensors", "--scheme", "int4", "--format", "fake", "--quiet", *extra)
        got = json.load(open(tmp_path / "f.report.json"))["tensors"][0]["sqnr_db"]
        assert abs(got - want) < 0.05, (extra, got)


def test_compressed_tensors_config_and_bf16_scales(tmp_path):
    src = os.path.join(FIX, "tiny-llama", "ft-bf16")
    run("quantize", src, "-o", tmp_path / "ct", "--scheme", "int4", "--group-size", "32", "--quiet")
    cfg = json.load(open(tmp_path / "ct" / "config.json"))
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"
    assert qc["quantization_status"] == "compressed"
    g = qc["config_groups"]["group_0"]
    assert g["format"] == "pack-quantized" and g["targets"] == ["Linear"]
    assert g["weights"] == {**g["weights"], "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 32}
    assert "lm_head" in qc["ignore"]
    st = load_file(str(tmp_path / "ct" / "model.safetensors"))
    assert st["model.layers.0.mlp.up_proj.weight_scale"].dtype == ml_dtypes.bfloat16
    assert "model.embed_tokens.weight" in st and "lm_head.weight" in st
    # what vLLM would reconstruct == wtool's fake quantization, bit for bit
    run("quantize", src, "-o", tmp_path / "fake", "--scheme", "int4", "--group-size", "32", "--format", "fake", "--quiet")
    run("quantize", "--dequantize", tmp_path / "ct", "-o", tmp_path / "back", "--quiet")
    fake = load_file(str(tmp_path / "fake" / "model.safetensors"))
    back = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert sorted(fake) == sorted(back)
    for k in fake:
        assert fake[k].dtype == back[k].dtype and fake[k].tobytes() == back[k].tobytes(), k
    assert "quantization_config" not in json.load(open(tmp_path / "back" / "config.json"))


def tied_model(tmp_path):
    """tiny-llama with tie_word_embeddings: no lm_head.weight in the checkpoint."""
    src = os.path.join(FIX, "tiny-llama", "ft-bf16")
    d = tmp_path / "tied"
    d.mkdir()
    t = load_file(os.path.join(src, "model.safetensors"))
    del t["lm_head.weight"]
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["tie_word_embeddings"] = True
    json.dump(cfg, open(d / "config.json", "w"))
    return d


@pytest.mark.parametrize("scheme", ["int4", "fp8"])
def test_tied_embeddings_ignore_lm_head(tmp_path, scheme):
    """The module exists only through tying; the ignore list must still name it, or transformers
    treats it as a quantized Linear."""
    src = tied_model(tmp_path)
    run("quantize", src, "-o", tmp_path / "ct", "--scheme", scheme, "--quiet",
        *(["--granularity", "channel"] if scheme == "fp8" else ["--group-size", "32"]))
    qc = json.load(open(tmp_path / "ct" / "config.json"))["quantization_config"]
    assert "lm_head" in qc["ignore"] and "model.embed_tokens" in qc["ignore"]
    # quantizing lm_head on purpose takes it off the list
    run("quantize", os.path.join(FIX, "tiny-llama", "ft-bf16"), "-o", tmp_path / "ct2", "--scheme", "int4", "--group-size", "32",
        "--include", "*proj.weight", "--include", "lm_head.weight", "--quiet")
    assert "lm_head" not in json.load(open(tmp_path / "ct2" / "config.json"))["quantization_config"]["ignore"]


@pytest.mark.parametrize("args,warned", [(["--scheme", "int4", "--asymmetric"], True), (["--scheme", "hqq4"], True),
                                         (["--scheme", "int4"], False), (["--scheme", "int4", "--asymmetric", "--granularity", "tensor"], False)])
def test_asymmetric_pack_quantized_warns_about_transformers(tmp_path, args, warned):
    src = os.path.join(FIX, "tiny-llama", "ft-bf16")
    code, _, err = run("quantize", src, "-o", tmp_path / "ct", *args, *([] if "tensor" in args else ["--group-size", "32"]))
    rep = json.load(open(tmp_path / "ct" / "wtool-report.json"))
    hit = [w for w in rep["warnings"] if "transformers 5" in w]
    assert bool(hit) == warned and (("transformers 5" in err) == warned)


def ct_unpack(packed, cols, bits):
    """compressed-tensors' unpack_from_int32 (dense LSB-first stream per row), transcribed."""
    words = packed.view(np.uint32).astype(np.uint64)
    rows = words.shape[0]
    out = np.zeros((rows, cols), np.int64)
    for c in range(cols):
        bit = c * bits; w, sh = bit // 32, bit % 32
        u = words[:, w] >> np.uint64(sh)
        if sh + bits > 32:
            u |= words[:, w + 1] << np.uint64(32 - sh)
        out[:, c] = (u & np.uint64((1 << bits) - 1)).astype(np.int64) - (1 << (bits - 1))
    return out


def ct_decode(folder, name, bits, dtype):
    """What compressed-tensors computes from a pack-quantized weight: unpack the codes and the zero
    points (packed along dim 0), then _dequantize: (q - zp) in the scale dtype, times the scale,
    in the scale dtype, cast to the model dtype."""
    t = load_file(str(folder / "model.safetensors"))
    prefix = name[: -len("weight")]
    rows, cols = (int(v) for v in t[prefix + "weight_shape"])
    q = ct_unpack(t[prefix + "weight_packed"], cols, bits)
    scale = t[prefix + "weight_scale"]
    groups = scale.shape[1]
    zp = ct_unpack(np.ascontiguousarray(t[prefix + "weight_zero_point"].T), rows, bits).T
    sd = scale.dtype
    qf = q.astype(sd).astype(np.float32).reshape(rows, groups, -1)
    zf = zp.astype(sd).astype(np.float32)[:, :, None]
    diff = (qf - zf).astype(sd).astype(np.float32)   # exact: small integers
    y = (diff * scale.astype(np.float32)[:, :, None]).astype(sd)
    return y.reshape(rows, cols).astype(dtype)


@pytest.mark.parametrize("bits", [4, 3])
@pytest.mark.parametrize("src", [QUANT, QUANT_BF16])
def test_hqq_under_the_format_beats_rtn_and_fake_is_what_engines_decode(tmp_path, bits, src):
    """Decoded as compressed-tensors decodes it, hqq beats compressed-tensors' asymmetric RTN by
    0.3 dB on the Gaussian and Laplace fixtures at group 64 (0.28 on Student-t3 at 4 bits, where an
    exhaustive search of (scale, integer zero) per group finds about 0.30 at most), and the fake
    output is bit for bit what the engine decodes."""
    run("quantize", src, "-o", tmp_path / "ct", "--scheme", f"hqq{bits}", "--group-size", "64", "--format", "compressed-tensors", "--quiet")
    run("quantize", src, "-o", tmp_path / "fake", "--scheme", f"hqq{bits}", "--group-size", "64", "--format", "fake", "--quiet")
    run("quantize", src, "-o", tmp_path / "rtn", "--scheme", f"int{bits}", "--asymmetric", "--group-size", "64", "--format", "fake", "--quiet")
    x = load_file(src)
    fake = load_file(str(tmp_path / "fake" / "model.safetensors"))
    rtn = load_file(str(tmp_path / "rtn" / "model.safetensors"))
    rep = {t["name"]: t for t in json.load(open(tmp_path / "fake" / "wtool-report.json"))["tensors"] if t["quantized"]}
    gains = {"up_proj": 0.3, "down_proj": 0.3, "o_proj": 0.28 if bits == 4 else 0.3}
    assert len(rep) == 3
    for n, t in rep.items():
        dec = ct_decode(tmp_path / "ct", n, bits, x[n].dtype)
        assert dec.tobytes() == fake[n].tobytes(), n
        ref = x[n].astype(np.float32)
        gain = sqnr(ref, dec.astype(np.float32)) - sqnr(ref, rtn[n].astype(np.float32))
        need = next(v for k, v in gains.items() if k in n)
        assert gain >= need, (n, bits, gain)
        assert abs(t["sqnr_db"] - sqnr(ref, fake[n].astype(np.float32))) < 1e-5
        assert t["rtn_sqnr_db"] == pytest.approx(sqnr(ref, rtn[n].astype(np.float32)), abs=1e-5)
        assert 1 <= t["hqq_iterations"] <= 20


def test_ternary_matches_bitnet_rule(tmp_path):
    src = load_file(QUANT)
    for scheme, scale in [("ternary", lambda a: np.abs(a).mean()), ("ternary-median", lambda a: np.sort(np.abs(a).ravel())[(a.size - 1) // 2])]:
        run("quantize", QUANT, "-o", tmp_path / "t.safetensors", "--scheme", scheme, "--format", "fake", "--quiet")
        out = load_file(str(tmp_path / "t.safetensors"))
        w = src["model.layers.0.mlp.up_proj.weight"]
        g = np.float32(max(scale(w.astype(np.float64)), 1e-5))
        ref = (np.clip(np.round(w / g), -1, 1) * g).astype(np.float32)
        np.testing.assert_allclose(out["model.layers.0.mlp.up_proj.weight"], ref, rtol=0, atol=1e-9)
        assert len(np.unique(out["model.layers.0.mlp.up_proj.weight"])) <= 3


def raw_tensors(path):
    """name -> (dtype string, shape, bytes), read straight from the file (safetensors.numpy has no F8)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little"); header = json.loads(f.read(n)); data = f.read()
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items() if k != "__metadata__"}


@pytest.mark.parametrize("gran", ["channel", "tensor"])
def test_fp8_matches_ml_dtypes(tmp_path, gran):
    run("quantize", QUANT, "-o", tmp_path / "ct", "--scheme", "fp8", "--granularity", gran, "--quiet")
    raw = raw_tensors(tmp_path / "ct" / "model.safetensors")
    st = {k: np.frombuffer(b, {"F8_E4M3": ml_dtypes.float8_e4m3fn, "F32": np.float32}[d]).reshape(sh) for k, (d, sh, b) in raw.items() if d in ("F8_E4M3", "F32")}
    w = load_file(QUANT)["model.layers.0.mlp.up_proj.weight"]
    amax = np.abs(w).max(axis=1, keepdims=True) if gran == "channel" else np.abs(w).max().reshape(1)
    s = (amax / np.float32(448)).astype(np.float32)
    codes = np.clip(w / s.reshape(-1, 1) if gran == "channel" else w / s, -448, 448).astype(ml_dtypes.float8_e4m3fn)
    got = st["model.layers.0.mlp.up_proj.weight"]
    assert got.dtype == ml_dtypes.float8_e4m3fn and raw["model.layers.0.mlp.up_proj.weight_scale"][1] == ([128, 1] if gran == "channel" else [1])
    np.testing.assert_array_equal(got.view(np.uint8), codes.view(np.uint8))
    np.testing.assert_array_equal(st["model.layers.0.mlp.up_proj.weight_scale"].ravel(), s.ravel())
    cfg = json.load(open(tmp_path / "ct" / "config.json")) if (tmp_path / "ct" / "config.json").exists() else None
    assert cfg is None  # a file without a folder config: the quantization_config is in the metadata
    meta = json.loads(open(tmp_path / "ct" / "model.safetensors", "rb").read()[8:][:int.from_bytes(open(tmp_path / "ct" / "model.safetensors", "rb").read(8), "little")])["__metadata__"]
    qc = json.loads(meta["quantization_config"])
    assert qc["format"] == "float-quantized" and qc["config_groups"]["group_0"]["weights"]["type"] == "float"
    run("quantize", "--dequantize", tmp_path / "ct", "-o", tmp_path / "back.safetensors", "--quiet")
    back = load_file(str(tmp_path / "back.safetensors"))["model.layers.0.mlp.up_proj.weight"]
    ref = codes.astype(np.float32) * (s.reshape(-1, 1) if gran == "channel" else s)
    np.testing.assert_array_equal(back, ref)


def test_deterministic_across_threads(tmp_path):
    for th in (1, 2):
        run("quantize", QUANT, "-o", tmp_path / f"h{th}.safetensors", "--scheme", "hqq4", "--format", "fake", "--threads", th, "--quiet")
        run("quantize", QUANT, "-o", tmp_path / f"k{th}.gguf", "--scheme", "q4_k", "--threads", th, "--quiet")
    for a, b in [("h1.safetensors", "h2.safetensors"), ("k1.gguf", "k2.gguf")]:
        assert open(tmp_path / a, "rb").read() == open(tmp_path / b, "rb").read()


@pytest.mark.parametrize("args,status,needle", [
    (["--scheme", "int4", "--format", "gguf"], 2, "cannot be written as gguf"),
    (["--scheme", "q4_0", "--format", "compressed-tensors"], 2, "cannot be written as compressed-tensors"),
    (["--scheme", "q5_9"], 2, "unknown --scheme"),
    (["--scheme", "q4_0", "--granularity", "channel"], 2, "does not apply"),
    (["--scheme", "hqq4", "--symmetric"], 2, "int2...int8"),
    (["--scheme", "int4", "--llama-cpp"], 2, "--llama-cpp"),
    (["--dequantize", "--scheme", "q4_0"], 2, "no quantization options"),
    (["--dequantize", "--group-size", "64"], 2, "no quantization options"),
    (["--dequantize", "--include", "*"], 2, "no --include/--exclude"),
    (["--scheme", "q4_0", "--group-size", "64"], 2, "--group-size applies to group granularity"),
    (["--scheme", "fp8", "--group-size", "64"], 2, "--group-size applies to group granularity"),
    (["--scheme", "int4", "--granularity", "channel", "--group-size", "64"], 2, "--group-size applies to group granularity"),
])
def test_usage_errors(tmp_path, args, status, needle):
    code, _, err = run("quantize", QUANT, "-o", tmp_path / "o.gguf", *args, check=False)
    assert code == status and needle in err, err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("out,args,needle", [
    ("o.safetensors", ["--scheme", "q4_0", "--format", "gguf"], "give -o NAME.gguf"),
    ("o.gguf", ["--scheme", "int4", "--format", "fake"], "needs --format gguf"),
    ("o.safetensors", ["--scheme", "fp8", "--granularity", "group"], "tensor or channel"),
    ("o.safetensors", ["--scheme", "int4", "--dtype", "f16"], "--dequantize"),
    ("o", ["--scheme", "int4", "--shard-size", "lots"], "invalid --shard-size"),
    ("o.safetensors", ["--scheme", "int4", "--symmetric", "--asymmetric"], "exclude each other"),
])
def test_more_usage_errors(tmp_path, out, args, needle):
    code, _, err = run("quantize", QUANT, "-o", tmp_path / out, *args, check=False)
    assert code == 2 and needle in err, err
    assert os.listdir(tmp_path) == []


def test_bad_inputs_leave_nothing(tmp_path):
    w = np.ones((4, 64), np.float32); w[2, 5] = np.nan
    p = tmp_path / "in" ; p.mkdir()
    save_file({"a.weight": w}, str(p / "nan.safetensors"))
    out = tmp_path / "out"; out.mkdir()
    for o, extra in [(out / "x.gguf", ["--scheme", "q8_0"]), (out / "x.safetensors", ["--scheme", "int4", "--format", "fake", "--group-size", "32"])]:
        code, _, err = run("quantize", p / "nan.safetensors", "-o", o, *extra, check=False)
        assert code == 1 and "a.weight" in err and "non-finite" in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(out) == []
    code, _, err = run("quantize", QUANT, "-o", out / "x.gguf", "--scheme", "q8_0", "--llama-cpp", check=False)
    assert code == 1 and "config.json" in err
    (out / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    code, _, err = run("quantize", "--dequantize", out / "bad.gguf", "-o", out / "y.safetensors", check=False)
    assert code == 1 and "bad.gguf" in err
    code, _, err = run("quantize", "--dequantize", QUANT, "-o", out / "y.safetensors", check=False)
    assert code == 1 and "no compressed-tensors weights" in err
    assert sorted(os.listdir(out)) == ["bad.gguf"]


@pytest.mark.parametrize("scheme", ["q4_k", "q4_1", "q5_1"])
def test_signed_zero_blocks_match_ggml(tmp_path, scheme):
    """ggml's encoders compare strictly (`if (v > max) max = v`): all-zero blocks of +0.0 or -0.0
    store the zero scales ggml stores. Legacy types: byte-identical with gguf-py; Q4_K (which
    gguf-py cannot encode): d and dmin are +0.0, as ggml_quantize_chunk writes them (checked
    against ggml itself in make test-clients); Swift's max(+0, -0) returns -0.0."""
    x = np.zeros((2, 256), np.float32)
    x[1] = -0.0
    save_file({"model.layers.0.mlp.up_proj.weight": x}, str(tmp_path / "z.safetensors"))
    run("quantize", tmp_path / "z.safetensors", "-o", tmp_path / "z.gguf", "--scheme", scheme, "--quiet")
    data = np.array(gguf.GGUFReader(str(tmp_path / "z.gguf")).tensors[0].data).tobytes()
    if scheme != "q4_k":
        assert data == gguf.quantize(x, qtype(scheme)).tobytes()
        return
    for b in range(0, len(data), 144):
        assert data[b: b + 4] == b"\0\0\0\0", b
