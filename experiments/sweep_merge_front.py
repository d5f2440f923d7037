#!/usr/bin/env python3
"""Joins the trials.csv of several sweeps into one table and marks the Pareto fronts over all of them.

Used where one sweep cannot express a point: the fp32 column of results/sweep/mnist_lenet5_bits_width_depth
(a trial without a multiplier has no bit-width key to sweep) is its own sweep, joined to the quantized one here.

  python3 experiments/sweep_merge_front.py OUT.md CSV[:KEY=VALUE,...] ...

Each CSV may name constant columns to add to its rows (e.g. trials.csv:bits=32). Objectives are the sweep's:
metrics.val_accuracy (max), sweep.energy_uj (min), sweep.weight_bytes (min). Marks: ★ best validation accuracy,
◆ on the front of all three, E on the front of accuracy vs energy, B on the front of accuracy vs weight bytes.
Failed trials are listed and take part in no front. The test accuracy is beside, never used to choose.
"""
import csv
import os
import sys

ACC, ENERGY, BYTES = "metrics.val_accuracy", "sweep.energy_uj", "sweep.weight_bytes"


def dominated(p, q, keys):
    """True when q is at least as good as p on every objective in keys and better on one."""
    better = False
    for k, sign in keys:
        if sign * q[k] < sign * p[k]:
            return False
        if sign * q[k] > sign * p[k]:
            better = True
    return better


def front(rows, keys):
    return {id(p) for p in rows if not any(dominated(p, q, keys) for q in rows if q is not p)}


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    rows = []
    for arg in argv[2:]:
        path, _, extra = arg.partition(":")
        consts = dict(kv.split("=", 1) for kv in extra.split(",") if kv)
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                r.update(consts)
                r["source"] = os.path.basename(os.path.dirname(os.path.abspath(path)))
                rows.append(r)
    done = [r for r in rows if r["status"] == "done"]
    for r in done:
        for k in (ACC, ENERGY, BYTES, "metrics.test_accuracy"):
            r[k] = float(r[k])
    f3 = front(done, [(ACC, 1), (ENERGY, -1), (BYTES, -1)])
    fe = front(done, [(ACC, 1), (ENERGY, -1)])
    fb = front(done, [(ACC, 1), (BYTES, -1)])
    best = max(done, key=lambda r: r[ACC]) if done else None
    lines = ["| | bits | width | depth | status | val acc | energy µJ | weight bytes | test acc | trial (sweep) |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    key = lambda r: (int(r["bits"]), int(r["depth"]), float(r["width"]))
    for r in sorted(rows, key=key):
        if r["status"] != "done":
            lines.append(f"| | {r['bits']} | {r['width']} | {r['depth']} | {r['status']} | | | | | {r['id']} ({r['source']}) |")
            continue
        mark = ("★" if r is best else "") + ("◆" if id(r) in f3 else "") + ("E" if id(r) in fe else "") + \
               ("B" if id(r) in fb else "")
        lines.append(f"| {mark} | {r['bits']} | {r['width']} | {r['depth']} | done | {r[ACC]:.4f} | {r[ENERGY]:g} | "
                     f"{r[BYTES]:g} | {r['metrics.test_accuracy']:.4f} | {r['id']} ({r['source']}) |")
    text = "\n".join(lines) + "\n"
    with open(argv[1] + ".tmp", "w") as f:
        f.write(text)
    os.replace(argv[1] + ".tmp", argv[1])
    sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv)
