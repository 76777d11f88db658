#!/usr/bin/env python3
"""The numpy peer of `wtool quantize` for `make bench`: streams the tensors of a safetensors file
through gguf-py's reference quantizers (`gguf.quants.quantize`, numpy) or a numpy transcription of
compressed-tensors' int4 group-128 RTN, and writes the bytes (no container: an advantage to the peer).
usage: numpy_quantize.py q8_0|q4_0|int4 IN OUT
"""
import sys
import numpy as np
import gguf
from safetensors import safe_open


def int4_g128(w):
    x = w.reshape(-1, 128)
    s = np.maximum(-np.minimum(x.min(1, keepdims=True), 0), np.maximum(x.max(1, keepdims=True), 0)) / np.float32(7.5)
    s = np.where(s == 0, np.float32(np.finfo(np.float32).eps), s)
    q = np.clip(np.round(x / s), -8, 7).astype(np.int8) + 8
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    return packed.tobytes() + s.astype(np.float32).tobytes()


def main():
    scheme, src, dst = sys.argv[1:4]
    with safe_open(src, "numpy") as f, open(dst, "wb") as out:
        for name in f.keys():
            w = f.get_tensor(name).astype(np.float32)
            if w.ndim != 2:
                out.write(w.tobytes()); continue
            if scheme == "int4":
                out.write(int4_g128(w))
            else:
                out.write(gguf.quantize(w, getattr(gguf.GGMLQuantizationType, scheme.upper())).tobytes())


if __name__ == "__main__":
    main()
