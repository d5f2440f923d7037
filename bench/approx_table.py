#!/usr/bin/env python3
"""Markdown table of bench/approx_bench.cpp's JSON lines: time of each approximate-conv path as a multiple of
the oneDNN fp32 conv on the same shape (resnet20 3x3 convs, batch 128): with the activation range found per call
(act_calibration=batch) and, after the slash, fixed by calibration (act_calibration=minmax:N).
Usage: approx_table.py FILE.jsonl"""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
shapes = list(dict.fromkeys(r["shape"] for r in rows))
paths = [p for p in dict.fromkeys(r["path"] for r in rows) if p != "onednn_fp32"]
# the file may hold several runs of the bench (Makefile.bench: APPROX_REPEATS): each number is the median over them
groups = {}
for r in rows:
    groups.setdefault((r["shape"], r["path"]), []).append(r)
repeats = max(len(g) for g in groups.values())


def median_row(g):
    out = dict(g[0])
    for k, v in g[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = statistics.median(x[k] for x in g)
    out["calibrated_output_identical"] = all(x.get("calibrated_output_identical", True) for x in g)
    return out


by = {k: median_row(g) for k, g in groups.items()}
print(f"Each ratio and each time is the median of {repeats} bench runs, taken separately.")
fp32_impl = sorted({r.get("impl", "?") for r in rows if r["path"] == "onednn_fp32"})
print(f"oneDNN fp32 implementation: {', '.join(fp32_impl)}; frugal's kernel paths: " +
      "; ".join(f"{p} {by_path}" for p, by_path in dict.fromkeys((r["path"], r.get("kernel_path", "?")) for r in rows
                                                                   if r["path"] != "onednn_fp32")) + ".\n")
print("| path: per-call range / calibrated range | " + " | ".join(shapes) + " | target |")
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
        if "ratio_calibrated" in r:
            cell += f" / {r['ratio_calibrated']:.2f}× ({r['ms_calibrated']:.1f} ms)"
            if not r.get("calibrated_output_identical", True):
                cell += " (outputs differ!)"
        if "emulation_rel" in r:  # lowrank: error against the bit-exact path, relative to its mean |output|
            cell += f", err {100 * r['emulation_rel']:.3f} %"
        cells.append(cell)
    print(f"| {p} | " + " | ".join(cells) + f" | {target} |")
