#!/usr/bin/env python3
"""The peer for `make bench`: a streaming numpy merge of bf16 safetensors checkpoints, tensor by
tensor (memory-mapped reads, header-first writes), as a careful Python user would write it.
  numpy_merge.py linear OUT A B            0.5 A + 0.5 B
  numpy_merge.py ties OUT BASE A B         TIES, density 0.5, weights 1, normalize (mergekit's rule)
"""
import json, struct, sys
import numpy as np


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def tensor(mm, hdr, start, name):
    b, e = hdr[name]["data_offsets"]
    raw = np.frombuffer(mm, dtype=np.uint16, count=(e - b) // 2, offset=start + b)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(hdr[name]["shape"])


def to_bf16(x):
    b = x.astype(np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def ties(base, models, density=0.5):
    deltas = []
    for m in models:
        d = m - base
        k = int(density * d.size)
        thr = np.partition(np.abs(d).ravel(), d.size - k)[d.size - k]
        deltas.append(np.where(np.abs(d) >= thr, d, 0))
    D = np.stack(deltas)
    sign = np.where(D.sum(0) >= 0, 1.0, -1.0)
    agree = (np.sign(D) == sign) & (D != 0)
    mixed = (D * agree).sum(0) / np.maximum(agree.sum(0), 1)
    return base + mixed


def main():
    method, out, *inputs = sys.argv[1:]
    maps = []
    for p in inputs:
        h, s = header(p)
        maps.append((np.memmap(p, dtype=np.uint8, mode="r"), h, s))
    h0 = maps[0][1]
    names = [n for n in h0 if n != "__metadata__"]
    offsets, pos = {}, 0
    for n in names:
        size = int(np.prod(h0[n]["shape"])) * 2
        offsets[n] = {"dtype": "BF16", "shape": h0[n]["shape"], "data_offsets": [pos, pos + size]}
        pos += size
    hb = json.dumps(offsets, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for n in names:
            xs = [tensor(m, h, s, n) for m, h, s in maps]
            y = 0.5 * xs[0] + 0.5 * xs[1] if method == "linear" else ties(xs[0], xs[1:])
            f.write(to_bf16(y).tobytes())
        f.flush()
        import os
        os.fsync(f.fileno())


if __name__ == "__main__":
    main()
