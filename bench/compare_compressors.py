#!/usr/bin/env python3
"""Joins frugal's and PyTorch's compressor micro-benchmark lines (same tensor, method and parameter) and prints a
markdown table of medians and speed-ups. Each file may hold several interleaved rounds (Makefile.bench runs
frugal, torch, frugal, torch, ...): the table quotes the median over rounds of each round's median. Lines
{"kind": "load", ...} (the load average the Makefile recorded around the rounds) go into the header.
Usage: compare_compressors.py frugal.jsonl torch.jsonl [load.jsonl]"""
import json, statistics, sys

def load(p):
    out = {}
    for line in open(p):
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r.get("kind") != "compressor":
            continue
        param = ",".join(f"{k}={r[k]}" for k in ("k_frac", "frac", "rank", "s") if k in r)
        # the size belongs to the key: SIZES=1e5,1e6,1e7 gives one "flat" tensor per size
        out.setdefault((r["tensor"], r["n"], r["method"], param), []).append(r)
    return out

def floors(p):
    out = {}
    for line in open(p):
        if line.startswith("{"):
            r = json.loads(line)
            if r.get("kind") == "memory_floor":
                out.setdefault((r["tensor"], r["n"], r["method"]), []).append(r["ms_median"])
    return out

def env(p):
    for line in open(p):
        if line.startswith("{"):
            r = json.loads(line)
            if r.get("kind") == "env":
                return r
    return {}

def med(rows, key):
    return statistics.median(r[key] for r in rows)

f, t = load(sys.argv[1]), load(sys.argv[2])
if len(sys.argv) > 3:
    loads = [json.loads(l) for l in open(sys.argv[3]) if l.startswith("{")]
    print("Run side by side, interleaved (frugal, torch, frugal, torch, ...); 1-minute load average "
          + ", ".join(f"{l['when']} {l['load1']:.2f}" for l in loads)
          + (f"; CPU: {loads[0].get('cpu', '?')}" if loads else "")
          + (f"; both run with {loads[0]['malloc']}" if loads and loads[0].get("malloc") else "") + ".\n")
fe, te = env(sys.argv[1]), env(sys.argv[2])
if fe.get("commit"):
    print(f"frugal: kernels {fe.get('kernel_isa')}, up to {fe.get('threads', '?')} TBB thread(s) in the large passes "
          f"(gradcomp/blocks.h; env lines before this bench's fix said 1 regardless), "
          f"{'native' if fe.get('native') else 'portable'} build at "
          f"{fe['commit'][:7]}{' (DIRTY tree)' if fe.get('dirty') else ' (clean tree)'}; PyTorch {te.get('torch', '?')}: "
          f"ATen CPU capability {te.get('aten_cpu_capability', '?')}, {te.get('threads', '?')} thread(s).\n")
print("| tensor | floats | method | param | frugal ms | torch ms | speed-up | rounds | frugal ratio | torch ratio | frugal rel_err | torch rel_err |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(set(f) & set(t)):
    a, b = f[key], t[key]
    fa, tb = med(a, "ms_median"), med(b, "ms_median")
    print(f"| {key[0]} | {key[1]:,} | {key[2]} | {key[3]} | {fa:.3f} | {tb:.3f} | {tb / fa:.1f}x | {min(len(a), len(b))} | "
          f"{a[0]['ratio']:.1f} | {b[0]['ratio']:.1f} | {a[0]['rel_err']:.3f} | {b[0]['rel_err']:.3f} |")
missing = sorted(set(t) - set(f))
if missing:
    print(f"\nPeer cases without a frugal twin: {missing}")
fl = floors(sys.argv[1])
if fl:
    print("\nMemory floor of DGC with a residual (compressors_bench, frugal's process): the residual update v += s g "
          "(read g and v, write v) and the dense decode's zero fill, nothing else. No DGC that keeps a residual runs "
          "faster; the peer's DGC is stateless and skips the update.\n")
    print("| tensor | floats | floor ms | param | frugal ms | frugal / floor | torch ms | torch / floor (the most a DGC with a residual can gain) |")
    print("|---|---|---|---|---|---|---|---|")
    for (tensor, n, method), ms in sorted(fl.items()):
        floor = statistics.median(ms)
        for key in sorted(k for k in set(f) & set(t) if k[:3] == (tensor, n, method)):
            fa, tb = med(f[key], "ms_median"), med(t[key], "ms_median")
            print(f"| {tensor} | {n:,} | {floor:.3f} | {key[3]} | {fa:.3f} | {fa / floor:.2f} | {tb:.3f} | {tb / floor:.1f}x |")
