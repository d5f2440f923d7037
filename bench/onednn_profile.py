#!/usr/bin/env python3
"""Where a training step's time goes: runs `frugal train` for a few steps with ONEDNN_VERBOSE=1 and sums oneDNN's
own per-primitive execution times by primitive, direction, kernel and shape, next to the step time frugal measured
(the rest is frugal's own work: data loading and augmentation, loss, optimizer, gradient bookkeeping, plus
oneDNN's verbose overhead). Convolutions are also given as GFLOP/s (2 FLOP per MAC, the unit of
bench/conv_ceiling.cpp) and, when the output folder holds conv_ceiling.json, as a share of that ceiling.

    python3 bench/onednn_profile.py --model cnn --dataset mnist --out results/bench/avx2   # -> profile_cnn.md
Run through `make -f Makefile.bench profile` (MODEL=cnn); ONEDNN_MAX_CPU_ISA=AVX2 FRUGAL_ISA=avx2 in the
environment profiles what an AVX2-only CPU runs. Steps before --skip are left out (primitive creation, warm-up).
"""
import argparse, collections, json, os, re, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_PROPS = {"forward_training", "backward", "backward_data", "backward_weights", "undef", ""}


def conv_flops(problem):
    """2 x MACs of a convolution problem string such as mb128_ic32oc32_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1."""
    v = {k: int(x) for k, x in re.findall(r"(mb|g|ic|oc|oh|ow|kh|kw)(\d+)", problem)}
    g = v.get("g", 1)
    return 2.0 * v["mb"] * v["oc"] * v["oh"] * v["ow"] * (v["ic"] // g) * v["kh"] * v["kw"]


def parse(lines, batch):
    """oneDNN exec records of the training steps: (primitive, impl, prop, problem, ms); stops at the first
    forward_inference record (the evaluation after training) and skips records of another minibatch size."""
    recs = []
    for l in lines:
        if not l.startswith("onednn_verbose,") or ",exec,cpu," not in l:
            continue
        f = l.rstrip("\n").split(",")
        prim, impl, prop, problem, ms = f[3], f[4], f[5], f[-2], float(f[-1])
        if prop == "forward_inference":
            break
        mb = re.search(r"mb(\d+)", problem)
        if mb and int(mb.group(1)) != batch:
            continue
        recs.append((prim, impl, prop, problem, ms))
    return recs


def split_steps(recs):
    """Each step starts with the first forward_training record of the first step (the first layer's forward)."""
    first = next(i for i, r in enumerate(recs) if r[2] == "forward_training")
    key = recs[first][:4]
    steps, cur = [], None
    for r in recs[first:]:
        if r[:4] == key:
            cur = []
            steps.append(cur)
        cur.append(r)
    return steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--skip", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("FRUGAL_BENCH_DATA", os.path.join(ROOT, "datasets", "data")))
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "bench"))
    ap.add_argument("--frugal", default=os.path.join(ROOT, "build", "frugal"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    run_dir = os.path.join("/tmp", f"frugal_profile_{a.model}_{os.getpid()}")
    cmd = [a.frugal, "train", "-q", "--out", run_dir, "--set", f"model={a.model}", "--set", f"dataset={a.dataset}",
           "--set", f"max_steps={a.steps}", "--set", "epochs=1", "--set", f"threads={a.threads}",
           "--set", f"data_dir={a.data_dir}"]
    print("[profile] ONEDNN_VERBOSE=1 " + " ".join(cmd), file=sys.stderr, flush=True)
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    res = json.load(open(os.path.join(run_dir, "results.json")))
    batch = int(res["config"].get("batch", 128))
    steps = split_steps(parse(p.stdout.splitlines() + p.stderr.splitlines(), batch))
    if len(steps) <= a.skip:
        sys.exit(f"only {len(steps)} steps in the verbose log; lower --skip")
    kept = steps[a.skip:]
    n = len(kept)
    # per (primitive, prop, impl, problem): total ms over the kept steps
    tot = collections.defaultdict(float)
    for s in kept:
        for prim, impl, prop, problem, ms in s:
            tot[(prim, prop, impl, problem)] += ms
    step_onednn = [sum(r[4] for r in s) for s in kept]
    step_ms = res["metrics"].get("train_step_ms_median")
    ceiling = None
    cpath = os.path.join(a.out, "conv_ceiling.json")
    if os.path.exists(cpath):
        ceiling = json.load(open(cpath))
    isa = res.get("environment", {}).get("onednn_cpu_isa", "")
    env_ = res.get("environment", {})
    out = []
    out.append(f"# Where a {a.model} training step goes (batch {res['config'].get('batch', 128)}, {a.threads} threads)\n")
    out.append(f"`ONEDNN_VERBOSE=1 frugal train --set model={a.model} --set dataset={a.dataset} --set max_steps={a.steps}`, "
               f"steps {a.skip + 1}-{len(steps)} ({n} steps) summed; oneDNN ISA `{isa}`, kernel ISA "
               f"`{env_.get('kernel_isa', '')}`, CPU {env_.get('cpu', '?')}, commit {env_.get('git_commit', '?')[:7]}"
               f"{' (dirty)' if env_.get('git_dirty') else ''}; generated by `bench/onednn_profile.py`.\n")
    med = statistics.median(step_onednn)
    line = f"Per step: oneDNN primitives {med:.2f} ms (median)"
    if step_ms:
        line += (f"; frugal's measured step time {step_ms:.2f} ms (median, a run without verbose timing would be a little "
                 f"faster), so {max(0.0, step_ms - med):.2f} ms ({max(0.0, 1 - med / step_ms) * 100:.0f} %) is outside oneDNN")
    out.append(line + ".")
    if ceiling:
        out.append(f"Conv ceiling on this machine: {ceiling['gflops']:.1f} GFLOP/s ({ceiling['shape']}, {ceiling['impl']}).")
    out.append("")
    out.append("| primitive | direction | kernel | shape | ms / step | share of oneDNN | GFLOP/s | of ceiling |")
    out.append("|---|---|---|---|---:|---:|---:|---:|")
    total = sum(tot.values())
    by_kind = collections.defaultdict(float)
    for (prim, prop, impl, problem), ms in sorted(tot.items(), key=lambda kv: -kv[1]):
        by_kind[prim] += ms
        per = ms / n
        gf, ofc = "", ""
        if prim == "convolution" and "mb" in problem:
            g = conv_flops(problem) / (per * 1e-3) / 1e9
            gf = f"{g:.0f}"
            if ceiling:
                ofc = f"{g / ceiling['gflops'] * 100:.0f} %"
        if per < 0.01:
            continue
        out.append(f"| {prim} | {prop} | {impl} | {problem[:60]} | {per:.3f} | {ms / total * 100:.1f} % | {gf} | {ofc} |")
    out.append("")
    out.append("| primitive kind | ms / step | share of oneDNN |")
    out.append("|---|---:|---:|")
    for prim, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        out.append(f"| {prim} | {ms / n:.3f} | {ms / total * 100:.1f} % |")
    path = os.path.join(a.out, f"profile_{a.model}.md")
    with open(path + ".tmp", "w") as fh:
        fh.write("\n".join(out) + "\n")
    os.replace(path + ".tmp", path)
    print("\n".join(out))


if __name__ == "__main__":
    main()
