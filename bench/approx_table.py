#!/usr/bin/env python3
"""Markdown table of bench/approx_bench.cpp's JSON lines: time of each approximate-conv path as a multiple of
the oneDNN fp32 conv on the same shape (resnet20 3x3 convs, batch 128). Usage: approx_table.py FILE.jsonl"""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
shapes = list(dict.fromkeys(r["shape"] for r in rows))
paths = [p for p in dict.fromkeys(r["path"] for r in rows) if p != "onednn_fp32"]
by = {(r["shape"], r["path"]): r for r in rows}
print("| path | " + " | ".join(shapes) + " | target |")
print("|---|" + "---|" * (len(shapes) + 1))
print("| oneDNN fp32 (ms) | " + " | ".join(f"{by[(s, 'onednn_fp32')]['ms']:.2f}" for s in shapes) + " | |")
for p in paths:
    target = "≤ 8×" if p.endswith(" lut") else "≤ 3×"
    cells = []
    for s in shapes:
        r = by.get((s, p))
        if not r:
            cells.append("–")
            continue
        cell = f"{r['ratio']:.2f}× ({r['ms']:.1f} ms)"
        if "emulation_rel" in r:  # lowrank: error against the bit-exact path, relative to its mean |output|
            cell += f", err {100 * r['emulation_rel']:.3f} %"
        cells.append(cell)
    print(f"| {p} | " + " | ".join(cells) + f" | {target} |")
