"""Raw-bytes access to the Python safetensors package (numpy has no bf16/f8 dtypes).

write_raw(path, {name: (HEADER_DTYPE, shape, bytes)}, metadata) writes with the reference writer;
read_raw(path) returns {name: (HEADER_DTYPE, shape, bytes)} through the reference reader.
"""
import numpy as np
from safetensors import TensorSpec, serialize_file, deserialize

# Header dtype names -> the names TensorSpec takes.
SPEC_NAMES = {"BOOL": "bool", "I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16", "I32": "int32",
              "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16", "F32": "float32", "F64": "float64",
              "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}

def write_raw(path, tensors, metadata=None):
    keep, specs = [], {}
    for name, (dtype, shape, data) in tensors.items():
        buf = np.frombuffer(bytes(data), dtype=np.uint8).copy() if len(data) else np.zeros(1, np.uint8)
        keep.append(buf)
        specs[name] = TensorSpec(dtype=SPEC_NAMES[dtype], shape=list(shape), data_ptr=buf.ctypes.data, data_len=len(data))
    serialize_file(specs, path, metadata=metadata)
    del keep

def read_raw(path):
    with open(path, "rb") as f:
        items = deserialize(f.read())
    out = {}
    for name, info in items:
        dt = info["dtype"]
        out[name] = (dt.upper() if dt.upper() in SPEC_NAMES else dt, list(info["shape"]), bytes(info["data"]))
    return out
