#!/usr/bin/env python3
"""Prints the short summary of a wtool JSON report (used by `make demo`)."""
import json, sys

rep = json.load(open(sys.argv[1]))
s = rep["summary"]
print(f"report {sys.argv[1]}: {s.get('tensors')} tensors, {s.get('converted', 0)} converted, "
      f"{s.get('bytes_in')} -> {s.get('bytes_out')} bytes, {s.get('shards')} shard(s)")
worst = max((t for t in rep["tensors"] if t.get("relative_error") is not None),
            key=lambda t: t["relative_error"], default=None)
if worst:
    print(f"largest rounding error: {worst['name']}: relative {worst['relative_error']:.3g}, max abs {worst['max_abs_error']:.3g}")
print("timing:", ", ".join(f"{k} {v:.4f}" for k, v in rep["timing"].items()))
