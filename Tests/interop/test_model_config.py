"""config.json describes what was written, in the layout the input uses (transformers 4:
torch_dtype, rope_theta/rope_scaling; transformers 5: dtype, rope_parameters), and values read
from it come from either layout, never from a silent default."""
import json, os, shutil
import gguf
import ml_dtypes  # noqa: F401  (numpy learns bfloat16)
import pytest
from safetensors.numpy import load_file
from conftest import FIX, run

TINY = os.path.join(FIX, "tiny-llama", "base")


def folder(tmp_path, layout, **changes):
    """tiny-llama with its config rewritten in one layout."""
    d = tmp_path / f"in-{layout}"
    shutil.copytree(TINY, d)
    cfg = json.load(open(d / "config.json"))
    if layout == 5:
        cfg["dtype"] = cfg.pop("torch_dtype")
        cfg["rope_parameters"] = {"rope_theta": cfg.pop("rope_theta"), "rope_type": "default"}
        cfg["transformers_version"] = "5.23.0"
    cfg.update(changes)
    for k, v in list(cfg.items()):
        if v is None:
            del cfg[k]
    json.dump(cfg, open(d / "config.json", "w"), indent=2)
    return d


def dtype_keys(path):
    cfg = json.load(open(path))
    return {k: cfg[k] for k in ("torch_dtype", "dtype") if k in cfg}


@pytest.mark.parametrize("layout,key", [(4, "torch_dtype"), (5, "dtype")])
def test_convert_writes_the_new_dtype_in_the_inputs_layout(tmp_path, layout, key):
    src = folder(tmp_path, layout)
    run("convert", src, "-o", tmp_path / "out", "--dtype", "f16", "--quiet")
    assert dtype_keys(tmp_path / "out" / "config.json") == {key: "float16"}
    # unchanged dtype: the config is copied byte for byte
    run("convert", src, "-o", tmp_path / "same", "--quiet")
    assert open(tmp_path / "same" / "config.json", "rb").read() == open(src / "config.json", "rb").read()


@pytest.mark.parametrize("layout,key", [(4, "torch_dtype"), (5, "dtype")])
def test_merge_task_vector_and_dequantize_write_the_dtype(tmp_path, layout, key):
    src = folder(tmp_path, layout)
    run("merge", "--method", "linear", src, src, "--weight", "0.5", "--dtype", "bf16", "-o", tmp_path / "m", "--quiet")
    assert dtype_keys(tmp_path / "m" / "config.json") == {key: "bfloat16"}
    run("task-vector", "apply", "--base", src, src, "--scale", "0.5", "--inputs", "model", "--dtype", "f16", "-o", tmp_path / "tv", "--quiet")
    assert dtype_keys(tmp_path / "tv" / "config.json") == {key: "float16"}
    run("quantize", src, "-o", tmp_path / "q", "--scheme", "int8", "--group-size", "32", "--quiet")
    qcfg = json.load(open(tmp_path / "q" / "config.json"))
    assert "quantization_config" in qcfg and dtype_keys(tmp_path / "q" / "config.json") == {key: "float32"}
    run("quantize", "--dequantize", tmp_path / "q", "-o", tmp_path / "d", "--dtype", "bf16", "--quiet")
    dcfg = json.load(open(tmp_path / "d" / "config.json"))
    assert "quantization_config" not in dcfg and dtype_keys(tmp_path / "d" / "config.json") == {key: "bfloat16"}
    for out in ("m", "tv", "d"):
        t = load_file(str(tmp_path / out / "model.safetensors"))
        want = {"m": "bfloat16", "tv": "float16", "d": "bfloat16"}[out]
        # dequantize converts what was quantized; the tensors kept in float stay as they were
        assert all(str(v.dtype) == want for k, v in t.items() if out != "d" or "_proj" in k), out


def test_structured_pruning_rewrites_sizes_in_either_layout(tmp_path):
    src = folder(tmp_path, 5)
    run("prune-sparse", src, "-o", tmp_path / "p", "--method", "structured", "--target", "mlp", "--sparsity", "0.25", "--quiet")
    cfg = json.load(open(tmp_path / "p" / "config.json"))
    assert cfg["intermediate_size"] == 48 and cfg["rope_parameters"]["rope_theta"] == 10000.0 and "rope_theta" not in cfg


def gguf_value(path, key):
    f = gguf.GGUFReader(str(path)).fields[key]
    return f.parts[-1][0] if f.types[0] != gguf.GGUFValueType.STRING else bytes(f.parts[-1]).decode()


@pytest.mark.parametrize("layout", [4, 5])
def test_llama_cpp_reads_rope_theta_from_either_layout(tmp_path, layout):
    if layout == 5:
        src = folder(tmp_path, 5, rope_parameters={"rope_theta": 100000.0, "rope_type": "default"})
    else:
        src = folder(tmp_path, 4, rope_theta=100000.0)
    run("quantize", src, "-o", tmp_path / "m.gguf", "--scheme", "q8_0", "--llama-cpp", "--tokenizer", "none", "--quiet")
    assert float(gguf_value(tmp_path / "m.gguf", "llama.rope.freq_base")) == 100000.0


@pytest.mark.parametrize("layout", [4, 5])
def test_llama_cpp_linear_rope_scaling(tmp_path, layout):
    scaling = {"rope_type": "linear", "factor": 4.0}
    if layout == 5:
        src = folder(tmp_path, 5, rope_parameters={"rope_theta": 10000.0, **scaling})
    else:
        src = folder(tmp_path, 4, rope_scaling={"type": "linear", "factor": 4.0})
    run("quantize", src, "-o", tmp_path / "m.gguf", "--scheme", "q8_0", "--llama-cpp", "--tokenizer", "none", "--quiet")
    assert gguf_value(tmp_path / "m.gguf", "llama.rope.scaling.type") == "linear"
    assert float(gguf_value(tmp_path / "m.gguf", "llama.rope.scaling.factor")) == 4.0


@pytest.mark.parametrize("changes,needle", [
    ({"rope_theta": None}, "needs 'rope_theta' (or 'rope_parameters.rope_theta')"),
    ({"rms_norm_eps": None}, "needs 'rms_norm_eps'"),
    ({"rope_scaling": {"rope_type": "fancy", "factor": 8.0}}, "rope scaling 'fancy' is not one --llama-cpp converts"),
    ({"num_hidden_layers": 2.5}, "'num_hidden_layers' must be a non-negative integer"),
    ({"rms_norm_eps": "small"}, "'rms_norm_eps' must be a number"),
    ({"rope_theta": None, "rope_parameters": {"rope_theta": "big"}}, "'rope_parameters.rope_theta' must be a number"),
])
def test_llama_cpp_refuses_missing_values_instead_of_defaulting(tmp_path, changes, needle):
    src = folder(tmp_path, 4, **changes)
    code, _, err = run("quantize", src, "-o", tmp_path / "m.gguf", "--scheme", "q8_0", "--llama-cpp", "--tokenizer", "none", check=False)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m.gguf").exists()


@pytest.mark.parametrize("text,needle", [("{not json", "invalid JSON"), ("[1, 2]", "not a JSON object")])
def test_a_broken_config_json_is_one_line_naming_it(tmp_path, text, needle):
    src = folder(tmp_path, 4)
    (src / "config.json").write_text(text)
    for args in (["quantize", src, "-o", tmp_path / "m.gguf", "--scheme", "q8_0", "--llama-cpp"],
                 ["convert", src, "-o", tmp_path / "c", "--dtype", "f16"],
                 ["prune-sparse", src, "-o", tmp_path / "p", "--method", "structured"]):
        code, _, err = run(*args, check=False)
        assert code == 1 and "config.json" in err and needle in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not any(n in os.listdir(tmp_path) for n in ("m.gguf", "c", "p"))


def test_structured_pruning_names_a_missing_size(tmp_path):
    src = folder(tmp_path, 5, intermediate_size=None)
    code, _, err = run("prune-sparse", src, "-o", tmp_path / "p", "--method", "structured", check=False)
    assert code == 1 and "needs 'intermediate_size'" in err
    assert not (tmp_path / "p").exists()
