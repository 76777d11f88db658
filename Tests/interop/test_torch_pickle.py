"""wtool reads torch.save checkpoints (zip format) without executing anything.

Files are written here without torch (torch_zip.py). The expected tensors come from Python's own
pickle module: an Unpickler whose find_class maps torch's rebuild functions to numpy (as_strided on
the storage bytes), so the reference interpretation is CPython's, not ours. Real torch.save files are
tested in Tests/clients/test_torch_bin.py.
"""
import io, json, os, pickle, struct, zipfile

import numpy as np
import pytest

from conftest import run
from st_raw import read_raw
from torch_zip import Tensor, Pickle, plain, save

NP = {"FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8", "IntStorage": "<i4",
      "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?", "BFloat16Storage": "<u2",
      "ComplexFloatStorage": "<c8"}
V3 = {"float8_e4m3fn": "u1", "uint16": "<u2", "uint32": "<u4", "float8_e5m2": "u1"}
ST = {"FloatStorage": "F32", "DoubleStorage": "F64", "HalfStorage": "F16", "LongStorage": "I64", "IntStorage": "I32",
      "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL", "BFloat16Storage": "BF16",
      "float8_e4m3fn": "F8_E4M3", "uint16": "U16", "uint32": "U32", "float8_e5m2": "F8_E5M2"}


def reference_load(path):
    """name -> (safetensors dtype, numpy array), by CPython's unpickler with numpy stand-ins."""
    z = zipfile.ZipFile(path)
    names = z.namelist()
    prefix = names[0].split("/")[0] + "/"

    class Storage:
        def __init__(self, kind, key, numel):
            self.kind, self.key, self.raw = kind, key, z.read(prefix + "data/" + key)

    def rebuild(storage, offset, size, stride, *rest):
        kind = storage.kind
        if rest and len(rest) >= 3 and isinstance(rest[2], str):
            kind = rest[2]
        dt = np.dtype(NP.get(kind) or V3[kind])
        flat = np.frombuffer(storage.raw, dtype=dt)
        a = np.lib.stride_tricks.as_strided(flat[offset:] if flat.size else flat, shape=size,
                                            strides=[s * dt.itemsize for s in stride])
        return (ST[kind], np.array(a))

    class U(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                import collections
                return collections.OrderedDict
            if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3"):
                return rebuild
            if (module, name) == ("torch._utils", "_rebuild_parameter"):
                return lambda t, *a: t
            if module in ("torch", "torch.storage") and name.endswith("Storage"):
                return name
            if module == "torch":
                return name  # a v3 dtype
            raise pickle.UnpicklingError(f"refused {module}.{name}")

        def persistent_load(self, pid):
            return Storage(pid[1], pid[2], pid[4])

    root = U(io.BytesIO(z.read(prefix + "data.pkl"))).load()
    return root


def check_equal(out, expected):
    got = read_raw(out)
    assert sorted(got) == sorted(expected)
    for name, (dt, arr) in expected.items():
        gdt, shape, data = got[name]
        assert gdt == dt, name
        assert shape == list(arr.shape), name
        assert data == np.ascontiguousarray(arr).tobytes(), name


def test_every_dtype_and_view(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 6)).astype(np.float32)
    shared = np.arange(15, dtype=np.float32)
    bf16 = (rng.standard_normal(10).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    items = {
        "f32": plain("0", base),
        "f64": plain("1", rng.standard_normal((3, 2))),
        "f16": plain("2", rng.standard_normal(5).astype(np.float16)),
        "bf16": Tensor("3", "BFloat16Storage", bf16.tobytes(), 10, 0, (2, 5), (5, 1)),
        "i64": plain("4", np.arange(-3, 3, dtype=np.int64).reshape(2, 3)),
        "i32": plain("5", np.arange(4, dtype=np.int32)),
        "i16": plain("6", np.arange(4, dtype=np.int16)),
        "i8": plain("7", np.arange(-2, 2, dtype=np.int8)),
        "u8": plain("8", np.arange(4, dtype=np.uint8)),
        "bool": plain("9", np.array([True, False, True])),
        # rows 1-2, columns 2-4 of the 4x6 storage "0"
        "view": Tensor("0", "FloatStorage", base.tobytes(), 24, 8, (2, 3), (6, 1)),
        "transposed": Tensor("0", "FloatStorage", base.tobytes(), 24, 0, (6, 4), (1, 6)),
        "shared_a": Tensor("10", "FloatStorage", shared.tobytes(), 15, 0, (15,), (1,)),
        "shared_b": Tensor("10", "FloatStorage", shared.tobytes(), 15, 5, (10,), (1,)),
        "broadcast": Tensor("10", "FloatStorage", shared.tobytes(), 15, 2, (3, 4), (0, 1)),
        "scalar": Tensor("11", "FloatStorage", np.float32(7).tobytes(), 1, 0, (), ()),
        "empty": Tensor("12", "FloatStorage", b"", 0, 0, (0, 4), (4, 1)),
        "f8": Tensor("13", "UntypedStorage", bytes(range(0, 64, 4)), 16, 0, (4, 4), (4, 1), v3_dtype="float8_e4m3fn"),
        "u16": Tensor("14", "UntypedStorage", np.arange(10, dtype=np.uint16).tobytes(), 20, 3, (7,), (1,), v3_dtype="uint16"),
        "param": Tensor("15", "FloatStorage", np.ones(3, np.float32).tobytes(), 3, 0, (3,), (1,), parameter=True),
    }
    for aligned in (True, False):
        src = str(tmp_path / f"sd{aligned}.bin")
        save(src, items, aligned=aligned)
        expected = reference_load(src)
        assert list(expected) == list(items)
        out = str(tmp_path / f"out{aligned}.safetensors")
        run("convert", src, "-o", out, "--quiet")
        check_equal(out, expected)


def test_zip_records_are_aligned_like_torch(tmp_path):
    src = str(tmp_path / "a.bin")
    save(src, {"w": plain("0", np.ones((3, 3), np.float32))})
    z = zipfile.ZipFile(src)
    with open(src, "rb") as f:
        raw = f.read()
    for info in z.infolist():
        n, e = struct.unpack_from("<HH", raw, info.header_offset + 26)
        assert (info.header_offset + 30 + n + e) % 64 == 0


def test_state_dict_nested_in_a_training_checkpoint_is_unwrapped(tmp_path):
    src = str(tmp_path / "ckpt.bin")
    save(src, {"state_dict": {"layer.weight": plain("0", np.eye(2, dtype=np.float32))}, "epoch": 3, "name": "run"})
    code, out, err = run("inspect", src)
    assert "layer.weight" in out and "state_dict" not in out.replace("'state_dict' entry", "")
    assert "tensors read from the checkpoint's 'state_dict' entry" in err


def test_memo_past_256_entries(tmp_path):
    # LONG_BINPUT / LONG_BINGET: more than 256 memo entries (torch writes them once a dict has ~60 tensors)
    items = {f"t{i}": plain(str(i), np.full(2, i, np.float32)) for i in range(120)}
    src = str(tmp_path / "many.bin")
    save(src, items)
    assert b"r" in open(src, "rb").read()
    out = str(tmp_path / "many.safetensors")
    run("convert", src, "-o", out, "--quiet")
    check_equal(out, reference_load(src))


def write_sharded(folder, tie=True):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((8, 4)).astype(np.float32)
    s1 = {"model.embed_tokens.weight": plain("0", emb)}
    if tie:
        s1["lm_head.weight"] = plain("0", emb)
    s2 = {"model.layers.0.mlp.up_proj.weight": plain("0", rng.standard_normal((6, 4)).astype(np.float32))}
    save(os.path.join(folder, "pytorch_model-00001-of-00002.bin"), s1)
    save(os.path.join(folder, "pytorch_model-00002-of-00002.bin"), s2)
    wm = {n: "pytorch_model-00001-of-00002.bin" for n in s1}
    wm.update({n: "pytorch_model-00002-of-00002.bin" for n in s2})
    with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": (32 + 24) * 4}, "weight_map": wm}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "torch_dtype": "float32"}, f)
    return {**s1, **s2}


def test_sharded_folder_and_every_command(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    items = write_sharded(a)
    write_sharded(b)
    out = str(tmp_path / "conv")
    _, _, err = run("convert", a, "-o", out, "--quiet")
    assert "total_size" not in err  # the tied storage is counted once, as the index does
    got = read_raw(os.path.join(out, "model.safetensors"))
    assert set(got) == set(items)
    assert got["lm_head.weight"] == got["model.embed_tokens.weight"]
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "wtool-report.json"]
    # a merge and a diff read .bin folders like safetensors ones
    run("merge", "--method", "linear", "--weight", "0.5", a, b, "-o", str(tmp_path / "m"), "--quiet")
    assert read_raw(str(tmp_path / "m" / "model.safetensors"))["model.layers.0.mlp.up_proj.weight"] == got["model.layers.0.mlp.up_proj.weight"]
    code, text, _ = run("diff", a, b)
    assert code == 0


def test_safetensors_preferred_when_a_folder_has_both(tmp_path):
    a = str(tmp_path / "a")
    write_sharded(a)
    run("convert", a, "-o", str(tmp_path / "st.safetensors"), "--quiet")
    os.rename(tmp_path / "st.safetensors", tmp_path / "a" / "model.safetensors")
    code, out, _ = run("inspect", a, "--json")
    assert "model.safetensors" in out and "pytorch_model-00001" not in out


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def body(obj, protocol):
    """The opcodes of pickle.dumps(obj) without its PROTO/FRAME header and STOP."""
    b = pickle.dumps(obj, protocol=protocol)
    b = b[2:]
    if protocol >= 4 and b[:1] == b"\x95":
        b = b[9:]
    return b[:-1]


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_reduce_payload_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "pwned"
    src = str(tmp_path / "evil.bin")
    good = plain("0", np.ones(2, np.float32))
    # the payload sits among ordinary tensors, as an attacker would place it
    save(src, {"a": good, "b": body(Evil(marker), protocol)})
    with open(src, "rb") as f:
        assert b"system" in f.read()
    out = tmp_path / "out"
    for cmd in (["convert", src, "-o", str(out)], ["inspect", src],
                ["merge", "--method", "linear", "--weight", "1", src, src, "-o", str(out)]):
        code, _, err = run(*cmd, check=False)
        assert code == 1
        assert "posix.system" in err and src in err, err
        assert len(err.strip().splitlines()) == 1
        assert not marker.exists()
        assert not out.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("__builtin__", "getattr"), ("os", "system"),
                                         ("subprocess", "Popen"), ("numpy.core.multiarray", "_reconstruct"),
                                         ("torch", "load")])
def test_other_globals_are_named_in_the_refusal(tmp_path, module, name):
    src = str(tmp_path / "g.bin")
    payload = b"c" + f"{module}\n{name}\n".encode() + b"X\x01\x00\x00\x00x\x85R"
    save(src, {"a": payload})
    code, _, err = run("inspect", src, check=False)
    assert code == 1 and f"'{module}.{name}'" in err


def test_malformed_archives_fail_with_one_line(tmp_path):
    good = {"w": plain("0", np.arange(6, dtype=np.float32).reshape(2, 3))}
    cases = {}
    p = str(tmp_path / "truncated.bin"); save(p, good)
    data = open(p, "rb").read(); open(p, "wb").write(data[: len(data) // 2]); cases[p] = "zip"
    p = str(tmp_path / "missing.bin")
    pk = Pickle(); pk.state_dict(good)
    save(p, {}, pickle_bytes=pk.finish()); cases[p] = "data/0"
    p = str(tmp_path / "pastend.bin")
    save(p, {"w": Tensor("0", "FloatStorage", np.zeros(6, np.float32).tobytes(), 6, 4, (2, 3), (3, 1))}); cases[p] = "past its storage"
    p = str(tmp_path / "legacy.bin")
    open(p, "wb").write(bytes([0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]) + b"\0" * 64); cases[p] = "legacy"
    p = str(tmp_path / "script.bin"); save(p, good, extra_records=[("constants.pkl", b"\x80\x02).")]); cases[p] = "TorchScript"
    p = str(tmp_path / "proto0.bin"); save(p, good, pickle_bytes=b"(dp0\n."); cases[p] = "opcode"
    p = str(tmp_path / "cut.bin"); pk = Pickle(); pk.state_dict(good); save(p, good, pickle_bytes=pk.finish()[:-20]); cases[p] = "truncated"
    p = str(tmp_path / "list.bin"); save(p, good, pickle_bytes=b"\x80\x02]."); cases[p] = "no dict of tensors"
    p = str(tmp_path / "deflated.bin"); save(p, good)
    with zipfile.ZipFile(p) as z, zipfile.ZipFile(str(tmp_path / "deflated2.bin"), "w", zipfile.ZIP_DEFLATED) as w:
        for i in z.infolist():
            w.writestr(i.filename, z.read(i.filename), compress_type=zipfile.ZIP_DEFLATED)
    cases[str(tmp_path / "deflated2.bin")] = "compressed"
    for path, words in cases.items():
        out = tmp_path / ("o-" + os.path.basename(path))
        code, _, err = run("convert", path, "-o", str(out), check=False)
        assert code == 1, path
        assert len(err.strip().splitlines()) == 1, err
        assert path in err and words in err, err
        assert not out.exists()


def test_other_refusals_name_the_file_and_tensor(tmp_path):
    """Every remaining refusal of the archive reader: one line, naming what is wrong, nothing written."""
    f32 = np.arange(6, dtype=np.float32)
    cases = []
    p = str(tmp_path / "big.bin")
    save(p, {"w": plain("0", f32)}, extra_records=[])
    with zipfile.ZipFile(p) as z, zipfile.ZipFile(str(tmp_path / "bigendian.bin"), "w") as w:
        for i in z.infolist():
            w.writestr(i.filename, b"big" if i.filename.endswith("byteorder") else z.read(i.filename))
    cases.append((tmp_path / "bigendian.bin", "byte order 'big'"))
    p = tmp_path / "c128.bin"
    save(str(p), {"z": Tensor("0", "ComplexDoubleStorage", bytes(32), 2, 0, (2,), (1,))}); cases.append((p, "complex128"))
    p = tmp_path / "q.bin"
    save(str(p), {"q": Tensor("0", "QInt8Storage", bytes(4), 4, 0, (4,), (1,))}); cases.append((p, "no safetensors equivalent"))
    p = tmp_path / "mixed.bin"
    save(str(p), {"v": Tensor("0", "FloatStorage", f32.tobytes(), 6, 0, (6,), (1,), v3_dtype="uint16")}); cases.append((p, "view of a float32 storage"))
    p = tmp_path / "twice.bin"
    save(str(p), {"a.b": plain("0", f32), "a": {"b": plain("1", f32)}}); cases.append((p, "holds this name twice"))
    p = tmp_path / "tar.bin"
    tar = bytearray(1024); tar[257:262] = b"ustar"
    open(p, "wb").write(bytes(tar)); cases.append((p, "legacy tar format"))
    # a conjugate view: _rebuild_tensor_v2's 7th argument {'conj': True}
    pk = Pickle(); pk.ordered_dict(); pk.op(b"("); pk.string("c")
    pk.glob("torch._utils", "_rebuild_tensor_v2"); pk.op(b"(")
    pk.op(b"("); pk.string("storage"); pk.glob("torch", "FloatStorage"); pk.string("0"); pk.string("cpu"); pk.int(6); pk.op(b"tQ")
    pk.int(0); pk.tuple((6,)); pk.tuple((1,)); pk.op(b"\x89"); pk.ordered_dict()
    pk.op(b"}"); pk.string("conj"); pk.op(b"\x88s")
    pk.op(b"tRu")
    p = tmp_path / "conj.bin"
    save(str(p), {"c": plain("0", f32)}, pickle_bytes=pk.finish()); cases.append((p, "conjugate or negative"))
    for path, needle in cases:
        out = tmp_path / ("o-" + path.name)
        code, _, err = run("convert", path, "-o", out, check=False)
        assert code == 1, (path, err)
        assert len(err.strip().splitlines()) == 1 and str(path) in err and needle in err, err
        assert not out.exists()
