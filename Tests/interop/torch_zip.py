"""A small writer of torch.save's zip format, without torch, for tests of wtool's pickle reader.

The pickle is assembled opcode by opcode (protocol 2, as torch.save writes it: GLOBAL, BINPUT/BINGET,
BINPERSID, REDUCE, SETITEMS...), and the archive follows torch's layout: every record under one
folder, stored, each data record 64-byte aligned through an "FB" padding extra field.

A tensor is given as Tensor(storage_key, storage_type, storage_bytes, offset, size, stride), so tests
can write views, shared storages and every dtype; `plain(name_or_key, array)` is the usual case.
"""
import struct, zipfile, io
from dataclasses import dataclass

import numpy as np

STORAGE_TYPES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
                 np.dtype("float16"): "HalfStorage", np.dtype("int64"): "LongStorage",
                 np.dtype("int32"): "IntStorage", np.dtype("int16"): "ShortStorage",
                 np.dtype("int8"): "CharStorage", np.dtype("uint8"): "ByteStorage",
                 np.dtype("bool"): "BoolStorage", np.dtype("complex64"): "ComplexFloatStorage"}


@dataclass
class Tensor:
    key: str
    storage_type: str          # "FloatStorage", ... or "UntypedStorage" (then v3_dtype is needed)
    data: bytes                # the whole storage
    numel: int                 # the persistent id's count (elements, or bytes when untyped)
    offset: int
    size: tuple
    stride: tuple
    v3_dtype: str = None       # e.g. "float8_e4m3fn", "uint16"
    parameter: bool = False    # wrapped in torch._utils._rebuild_parameter


def plain(key, a):
    a = np.ascontiguousarray(a)
    stride = tuple(s // a.itemsize for s in a.strides) if a.ndim else ()
    return Tensor(key, STORAGE_TYPES[a.dtype], a.tobytes(), a.size, 0, tuple(a.shape), stride)


class Pickle:
    def __init__(self):
        self.out = bytearray(b"\x80\x02")
        self.memo = {}

    def op(self, b):
        self.out += b

    def string(self, s):
        b = s.encode()
        self.op(b"X" + struct.pack("<I", len(b)) + b)

    def int(self, v):
        if 0 <= v < 256:
            self.op(b"K" + bytes([v]))
        elif 0 <= v < 65536:
            self.op(b"M" + struct.pack("<H", v))
        elif -2**31 <= v < 2**31:
            self.op(b"J" + struct.pack("<i", v))
        else:
            n = (v.bit_length() + 8) // 8
            self.op(b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True))

    def glob(self, module, name):
        """GLOBAL, memoised like pickle does (BINPUT first time, BINGET after)."""
        key = (module, name)
        if key in self.memo:
            self.get(self.memo[key])
        else:
            self.op(b"c" + f"{module}\n{name}\n".encode())
            self.put(key)

    def put(self, key):
        i = len(self.memo)
        self.memo[key] = i
        self.op(b"q" + bytes([i]) if i < 256 else b"r" + struct.pack("<I", i))

    def get(self, i):
        self.op(b"h" + bytes([i]) if i < 256 else b"j" + struct.pack("<I", i))

    def tuple(self, items):
        if len(items) == 0:
            self.op(b")")
            return
        if len(items) > 3:
            self.op(b"(")
        for v in items:
            self.int(v)
        if len(items) <= 3:
            self.op(bytes([0x84 + len(items)]))
        else:
            self.op(b"t")

    def ordered_dict(self):
        self.glob("collections", "OrderedDict")
        self.op(b")R")

    def tensor(self, t: Tensor):
        if t.parameter:
            self.glob("torch._utils", "_rebuild_parameter")
            self.op(b"(")
        self.glob("torch._utils", "_rebuild_tensor_v3" if t.v3_dtype else "_rebuild_tensor_v2")
        self.op(b"(")
        # persistent id ('storage', type, key, 'cpu', numel); a storage seen before is fetched from the memo
        if ("storage", t.key) in self.memo:
            self.get(self.memo[("storage", t.key)])
        else:
            self.op(b"(")
            self.string("storage")
            self.glob("torch.storage" if t.storage_type == "UntypedStorage" else "torch", t.storage_type)
            self.string(t.key)
            self.string("cpu")
            self.int(t.numel)
            self.op(b"t")
            self.put(("pid", t.key))
            self.op(b"Q")
            self.put(("storage", t.key))
        self.int(t.offset)
        self.tuple(t.size)
        self.tuple(t.stride)
        self.op(b"\x89")            # requires_grad False
        self.ordered_dict()          # backward_hooks
        if t.v3_dtype:
            self.glob("torch", t.v3_dtype)
        self.op(b"tR")
        if t.parameter:
            self.op(b"\x89")
            self.ordered_dict()
            self.op(b"tR")

    def raw(self, b):
        """Opcodes from elsewhere (for example the body of a hostile pickle)."""
        self.op(b)

    def state_dict(self, items, ordered=True):
        """items: name -> Tensor, int, str, dict (nested) or bytes (raw opcodes)."""
        if ordered:
            self.ordered_dict()
        else:
            self.op(b"}")
        self.op(b"(")
        for name, v in items.items():
            self.string(name)
            if isinstance(v, Tensor):
                self.tensor(v)
            elif isinstance(v, dict):
                self.state_dict(v, ordered=False)
            elif isinstance(v, bytes):
                self.raw(v)
            elif isinstance(v, str):
                self.string(v)
            else:
                self.int(v)
        self.op(b"u")

    def finish(self):
        return bytes(self.out + b".")


def storages(items, found=None):
    found = {} if found is None else found
    for v in items.values():
        if isinstance(v, Tensor):
            found.setdefault(v.key, v.data)
        elif isinstance(v, dict):
            storages(v, found)
    return found


def save(path, items, pickle_bytes=None, aligned=True, folder=None, extra_records=()):
    """Writes a torch.save-style zip: <folder>/data.pkl, byteorder, data/<key>..., version."""
    folder = folder or path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if pickle_bytes is None:
        p = Pickle()
        p.state_dict(items)
        pickle_bytes = p.finish()
    records = [("data.pkl", pickle_bytes), (".format_version", b"1"), (".storage_alignment", b"64"),
               ("byteorder", b"little")]
    records += [(f"data/{k}", d) for k, d in storages(items).items()]
    records += list(extra_records)
    records += [("version", b"3\n")]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in records:
            info = zipfile.ZipInfo(f"{folder}/{name}")
            info.compress_type = zipfile.ZIP_STORED
            if aligned:
                # local header 30 + name + 4 (extra header) + padding -> data on a 64-byte boundary
                start = buf.tell() + 30 + len(info.filename.encode()) + 4
                info.extra = b"FB" + struct.pack("<H", (64 - start % 64) % 64) + b"Z" * ((64 - start % 64) % 64)
            z.writestr(info, data)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
