#!/usr/bin/env python3
"""The peer for `make bench`: streaming numpy pruning of a bf16 safetensors checkpoint, tensor by
tensor (memory-mapped reads, header-first writes), as a careful Python user would write it.
  numpy_prune.py magnitude OUT IN          50% per tensor
  numpy_prune.py nm OUT IN                 2:4 along rows
  numpy_prune.py wanda OUT IN STATS        50% per row, |w| * sqrt(act_sq_sum)
  numpy_prune.py wanda-nm OUT IN STATS     2:4 along rows by the same scores
"""
import json, os, struct, sys
import numpy as np
from numpy_merge import header, tensor, to_bf16


def main():
    method, out, src, *rest = sys.argv[1:]
    h, start = header(src)
    mm = np.memmap(src, dtype=np.uint8, mode="r")
    stats = None
    if method in ("wanda", "wanda-nm"):
        sh, ss = header(rest[0])
        smm = np.memmap(rest[0], dtype=np.uint8, mode="r")
        stats = lambda n: np.frombuffer(smm, np.float32, count=int(np.prod(sh[n]["shape"])), offset=ss + sh[n]["data_offsets"][0])
    names = [n for n in h if n != "__metadata__"]
    meta = {n: h[n] for n in names}
    hb = json.dumps(meta, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        for n in sorted(names, key=lambda k: h[k]["data_offsets"]):
            w = tensor(mm, h, start, n)
            if method == "magnitude":
                k = int(w.size * 0.5)
                flat = w.ravel().copy()
                flat[np.argpartition(np.abs(flat), k)[:k]] = 0
                y = flat.reshape(w.shape)
            elif method in ("nm", "wanda-nm"):
                g = w.reshape(w.shape[0], -1, 4)
                s = np.abs(w) if method == "nm" else np.abs(w) * np.sqrt(stats(n[: -len(".weight")] + ".act_sq_sum"))[None, :]
                idx = np.argsort(s.reshape(g.shape), axis=2, kind="stable")[:, :, :2]
                y = g.copy()
                np.put_along_axis(y, idx, 0, axis=2)
                y = y.reshape(w.shape)
            else:
                s = np.abs(w) * np.sqrt(stats(n[: -len(".weight")] + ".act_sq_sum"))[None, :]
                k = int(w.shape[1] * 0.5)
                idx = np.argpartition(s, k, axis=1)[:, :k]
                y = w.copy()
                np.put_along_axis(y, idx, 0, axis=1)
            f.write(to_bf16(y).tobytes())
        f.flush()
        os.fsync(f.fileno())


if __name__ == "__main__":
    main()
