"""The digits experiment's two MLPs (permute-match notes §2.3/§6): 64-128-128-10 ReLU networks
trained on sklearn's 8x8 digits from different seeds, in numpy.

    python Fixtures/permute/make_digits.py

digits.safetensors holds the data (sklearn's load_digits: 1797 x 64 pixels 0..16, labels) and the
split (seed 0: 449 test rows, 1348 train rows). It is exported once from scikit-learn when that is
installed; otherwise the committed file is read. a.safetensors / b.safetensors are the trained
models (F32, layers.{0,1,2}.{weight,bias}, weight (out, in)). Training is deterministic on one
machine; another BLAS may change the last bits, so tests judge by tolerances, not hashes.
"""
import os

import numpy as np
from safetensors.numpy import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "digits.safetensors")
WIDTH, EPOCHS, BATCH, LR, MOMENTUM, DECAY = 128, 60, 32, 0.05, 0.9, 1e-4


def dataset():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        d = load_file(DATA)
        return d["x"], d["y"], d["test"], d["train"]
    d = load_digits()
    x, y = d.data.astype(np.uint8), d.target.astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(x))
    test, train = np.sort(order[:449]), np.sort(order[449:])
    save_file({"x": x, "y": y, "test": test.astype(np.int64), "train": train.astype(np.int64)}, DATA)
    return x, y, test, train


def init(seed):
    """PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias."""
    rng = np.random.default_rng(seed)
    params = {}
    for k, (o, i) in enumerate([(WIDTH, 64), (WIDTH, WIDTH), (10, WIDTH)]):
        b = 1 / np.sqrt(i)
        params[f"layers.{k}.weight"] = rng.uniform(-b, b, (o, i))
        params[f"layers.{k}.bias"] = rng.uniform(-b, b, o)
    return params


def forward(p, x):
    acts = [x]
    h = x
    for k in range(3):
        h = h @ p[f"layers.{k}.weight"].T + p[f"layers.{k}.bias"]
        if k < 2:
            h = np.maximum(h, 0)
        acts.append(h)
    return acts


def train(seed, x, y):
    p = init(seed)
    vel = {k: np.zeros_like(v) for k, v in p.items()}
    rng = np.random.default_rng(seed + 1000)
    steps = EPOCHS * int(np.ceil(len(x) / BATCH))
    step = 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(x))
        for s in range(0, len(x), BATCH):
            idx = order[s:s + BATCH]
            acts = forward(p, x[idx])
            z = acts[-1] - acts[-1].max(axis=1, keepdims=True)
            prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            g = prob
            g[np.arange(len(idx)), y[idx]] -= 1
            g /= len(idx)
            lr = LR * 0.5 * (1 + np.cos(np.pi * step / steps))
            for k in (2, 1, 0):
                gw = g.T @ acts[k] + DECAY * p[f"layers.{k}.weight"]
                gb = g.sum(axis=0)
                if k > 0:
                    g = (g @ p[f"layers.{k}.weight"]) * (acts[k] > 0)
                for name, grad in ((f"layers.{k}.weight", gw), (f"layers.{k}.bias", gb)):
                    vel[name] = MOMENTUM * vel[name] + grad
                    p[name] -= lr * vel[name]
            step += 1
    return {k: v.astype(np.float32) for k, v in p.items()}


def main():
    x, y, test, train_idx = dataset()
    xs = x.astype(np.float64) / 16
    for name, seed in (("a", 0), ("b", 1)):
        p = train(seed, xs[train_idx], y[train_idx].astype(np.int64))
        acc = (forward(p, xs[test])[-1].argmax(axis=1) == y[test]).mean()
        save_file(p, os.path.join(HERE, f"{name}.safetensors"))
        print(f"{name}: seed {seed}, test accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
