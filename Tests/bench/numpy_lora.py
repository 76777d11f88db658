#!/usr/bin/env python3
"""The peer for `make bench`: what mergekit-extract-lora does per matrix, in numpy: the full SVD
of the f32 delta, truncated to rank r (factors computed, not written). Usage: BASE FT RANK."""
import sys
import numpy as np
from numpy_merge import header, tensor


def main():
    base, ft, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
    (hb, sb), (hf, sf) = header(base), header(ft)
    mb, mf = np.memmap(base, dtype=np.uint8, mode="r"), np.memmap(ft, dtype=np.uint8, mode="r")
    for name in hb:
        if name == "__metadata__":
            continue
        delta = tensor(mf, hf, sf, name) - tensor(mb, hb, sb, name)
        u, s, vt = np.linalg.svd(delta, full_matrices=False)
        a, b = np.sqrt(s[:rank])[:, None] * vt[:rank], u[:, :rank] * np.sqrt(s[:rank])
        del a, b


if __name__ == "__main__":
    main()
