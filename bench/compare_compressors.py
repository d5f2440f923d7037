#!/usr/bin/env python3
"""Joins frugal's and PyTorch's compressor micro-benchmark lines (same tensor, method and parameter) and prints a
markdown table of medians and speed-ups. Usage: compare_compressors.py frugal.jsonl torch.jsonl"""
import json, sys

def load(p):
    out = {}
    for line in open(p):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r.get("kind") != "compressor":
            continue
        param = ",".join(f"{k}={r[k]}" for k in ("k_frac", "frac", "rank", "s") if k in r)
        out[(r["tensor"], r["method"], param)] = r
    return out

f, t = load(sys.argv[1]), load(sys.argv[2])
print("| tensor | method | param | frugal ms | torch ms | speed-up | frugal ratio | torch ratio | frugal rel_err | torch rel_err |")
print("|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(set(f) & set(t)):
    a, b = f[key], t[key]
    print(f"| {key[0]} | {key[1]} | {key[2]} | {a['ms_median']:.3f} | {b['ms_median']:.3f} | {b['ms_median'] / a['ms_median']:.1f}x | "
          f"{a['ratio']:.1f} | {b['ratio']:.1f} | {a['rel_err']:.3f} | {b['rel_err']:.3f} |")
missing = sorted(set(t) - set(f))
if missing:
    print(f"\nPeer cases without a frugal twin: {missing}")
