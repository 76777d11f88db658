"""wtool's dtype conversions equal numpy's and ml_dtypes' bit for bit."""
import numpy as np
import ml_dtypes
import pytest
from safetensors.numpy import save_file
from conftest import run
from st_raw import read_raw, write_raw


def probe_values():
    """Every sign and exponent, random mantissas, halfway cases, subnormals, Inf and quiet NaN."""
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[~np.isnan(x)]  # signalling-NaN payloads are not compared bit for bit; quiet NaN below
    halves = (np.arange(0, 65536, dtype=np.uint32) << 16 | 0x8000).view(np.float32)  # bf16 ties
    halves = halves[~np.isnan(halves)]
    special = np.array([0, -0.0, np.inf, -np.inf, np.nan, 65504, 65520, 448, 464, 57344, 1e-45, 6e-8, 3e-8], np.float32)
    return np.concatenate([x, halves, special, rng.standard_normal(10_000).astype(np.float32)])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    p = tmp_path_factory.mktemp("codec") / "src.safetensors"
    x = probe_values()
    save_file({"x": x}, p)
    return p, x


def converted(source, tmp_path, dtype):
    out = tmp_path / f"{dtype}.safetensors"
    run("convert", source, "-o", out, "--dtype", dtype, "--quiet")
    return read_raw(out)["x"]


@pytest.mark.parametrize("dtype,ref", [("bf16", ml_dtypes.bfloat16), ("f16", np.float16),
                                       ("f8_e4m3", ml_dtypes.float8_e4m3fn), ("f8_e5m2", ml_dtypes.float8_e5m2)])
def test_f32_to_narrow_float_bit_for_bit(source, tmp_path, dtype, ref):
    p, x = source
    dt, shape, data = converted(p, tmp_path, dtype)
    with np.errstate(over="ignore"):
        expect = x.astype(ref)
    got = np.frombuffer(data, dtype=ref)
    nan = np.isnan(expect.astype(np.float32))
    assert np.array_equal(np.isnan(got.astype(np.float32)), nan)
    assert got[~nan].tobytes() == expect[~nan].tobytes()


def test_bf16_to_f32_is_exact(tmp_path):
    rng = np.random.default_rng(5)
    b = rng.integers(0, 2 ** 16, 65536, dtype=np.uint32).astype(np.uint16)
    src = tmp_path / "b.safetensors"
    write_raw(src, {"x": ("BF16", [b.size], b.tobytes())})
    out = tmp_path / "f.safetensors"
    run("convert", src, "-o", out, "--dtype", "f32", "--quiet")
    got = np.frombuffer(read_raw(out)["x"][2], dtype=np.float32)
    expect = b.view(ml_dtypes.bfloat16).astype(np.float32)
    nan = np.isnan(expect)
    assert np.array_equal(np.isnan(got), nan) and got[~nan].tobytes() == expect[~nan].tobytes()


def test_unselected_and_integer_tensors_are_copied(tmp_path):
    src = tmp_path / "m.safetensors"
    save_file({"keep.f32": np.linspace(-1, 1, 9, dtype=np.float32), "conv.f32": np.linspace(-1, 1, 9, dtype=np.float32),
               "ids": np.arange(5, dtype=np.int64)}, src)
    out = tmp_path / "o.safetensors"
    run("convert", src, "-o", out, "--dtype", "bf16", "--exclude", "keep.*", "--quiet")
    got = read_raw(out)
    assert got["keep.f32"][0] == "F32" and got["ids"][0] == "I64" and got["conv.f32"][0] == "BF16"
    assert got["ids"] == read_raw(src)["ids"] and got["keep.f32"] == read_raw(src)["keep.f32"]
