#!/usr/bin/env python3
"""Training step time against libgomp's spin count (GOMP_SPINCOUNT), interleaved and repeated.

oneDNN runs on OpenMP; how long its idle threads spin before sleeping decides whether the next primitive finds
them awake (and whether frugal's TBB passes and the data loader find the cores free). This measures the median
training step (frugal's train_step_ms_median) per model and spin count, runs interleaved so machine noise hits all
settings alike. Writes <out>/omp_spin.json and prints a Markdown table.

  /usr/bin/python3 bench/omp_spin.py --spins 20000,300000 --repeats 5 --out results/bench/avx2
"""
import argparse, json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"mlp": ("mnist", 200), "lenet5": ("mnist", 200), "cnn": ("mnist", 40), "resnet20": ("cifar10", 25)}


def step_ms(model, spin, data_root):
    data, steps = MODELS[model]
    out = f"{ROOT}/runs/bench/spin_{model}"
    env = dict(os.environ, GOMP_SPINCOUNT=str(spin))
    env.pop("OMP_WAIT_POLICY", None)
    subprocess.run([f"{ROOT}/build/frugal", "train", "-q", "--out", out, "--set", f"model={model}", "--set",
                    f"dataset={data}", "--set", f"max_steps={steps}", "--set", "epochs=1", "--set",
                    f"data_dir={data_root(data)}"], check=True, capture_output=True, env=env)
    return json.load(open(f"{out}/results.json"))["metrics"]["train_step_ms_median"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,lenet5,cnn,resnet20")
    ap.add_argument("--spins", default="20000,300000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=f"{ROOT}/results/bench")
    args = ap.parse_args()
    data_root = lambda d: f"{ROOT}/datasets/data" if d == "mnist" else f"{ROOT}/../shared/datasets"
    spins = [int(s) for s in args.spins.split(",")]
    rows = {}
    for model in args.models.split(","):
        t = {s: [] for s in spins}
        for rep in range(args.repeats):
            for s in (spins if rep % 2 == 0 else spins[::-1]):
                t[s].append(step_ms(model, s, data_root))
                print(f"[spin] {model} GOMP_SPINCOUNT={s} repeat {rep}: {t[s][-1]:.2f} ms", file=sys.stderr, flush=True)
        rows[model] = {str(s): dict(median_ms=statistics.median(v), runs_ms=v) for s, v in t.items()}
    os.makedirs(args.out, exist_ok=True)
    json.dump(dict(when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), repeats=args.repeats, models=rows),
              open(f"{args.out}/omp_spin.json", "w"), indent=1)
    print("| model | " + " | ".join(f"GOMP_SPINCOUNT={s} median step ms" for s in spins) + " |")
    print("|---|" + "---|" * len(spins))
    for model, r in rows.items():
        print(f"| {model} | " + " | ".join(f"{r[str(s)]['median_ms']:.2f}" for s in spins) + " |")


if __name__ == "__main__":
    main()
