#!/usr/bin/env python3
"""The peers for `make bench`, per matrix of FT - BASE, in numpy (f32 throughout, numpy's own
multithreaded OpenBLAS), factors computed, not written. Usage: BASE FT RANK METHOD
  full:       what mergekit-extract-lora does: the full SVD, truncated to rank r;
  randomized: the algorithm of wtool's --svd randomized (Halko, Martinsson & Tropp 2011, Alg. 4.4
              + 5.1: Gaussian test matrix of rank + 10 columns, 2 power iterations, each product
              orthonormalised by QR, then the SVD of the small projection), with the same error
              measurement wtool reports (the Frobenius residual of the rank-r approximation)."""
import sys
import numpy as np
from numpy_merge import header, tensor


def randomized(delta, rank, rng, oversample=10, power=2):
    m, n = delta.shape
    l = min(rank + oversample, m, n)
    q, _ = np.linalg.qr(delta @ rng.standard_normal((n, l), dtype=np.float32))
    for _ in range(power):
        w, _ = np.linalg.qr(delta.T @ q)
        q, _ = np.linalg.qr(delta @ w)
    u, s, vt = np.linalg.svd(q.T @ delta, full_matrices=False)
    return q @ u[:, :rank], s[:rank], vt[:rank]


def main():
    base, ft, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
    method = sys.argv[4] if len(sys.argv) > 4 else "full"
    (hb, sb), (hf, sf) = header(base), header(ft)
    mb, mf = np.memmap(base, dtype=np.uint8, mode="r"), np.memmap(ft, dtype=np.uint8, mode="r")
    rng = np.random.default_rng(0)
    for name in hb:
        if name == "__metadata__":
            continue
        delta = tensor(mf, hf, sf, name) - tensor(mb, hb, sb, name)
        if method == "full":
            u, s, vt = np.linalg.svd(delta, full_matrices=False)
            u, s, vt = u[:, :rank], s[:rank], vt[:rank]
        else:
            u, s, vt = randomized(delta, rank, rng)
        a, b = np.sqrt(s)[:, None] * vt, u * np.sqrt(s)
        if method != "full":
            err = np.linalg.norm(delta - b @ a) / np.linalg.norm(delta)
        del a, b


if __name__ == "__main__":
    main()
