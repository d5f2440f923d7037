#!/usr/bin/env python3
"""frugal vs the PyTorch peer harness (../shared/peers/torch_train.py), same model, batch 128, 2 threads,
interleaved and repeated; writes results/bench/train_<model>.json (all raw runs) and results/bench/train.md
(median ratios; `python3 experiments/summarize.py` copies it into results/bench/README.md). Run through `make -f Makefile.bench`.

Per model and repeat: frugal train (max_steps S, real data) then frugal evaluate (batch-1 latency, batch-256
throughput), then the peer with its best variant (--linear-impl onednn, plus --channels-last for cnn/resnet20).
Training speed = images / sum of step times after the first 5 steps (both tools); GFLOP/s = img/s x 3 x 2 x MACs.
"""
import argparse, json, os, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "..", "shared", "peers", "torch_train.py")
# DESIGN.md's fp32 conv ceiling (3x3 conv 64->64, 32x32, batch 128, forward) is measured on this machine by
# bench/conv_ceiling.cpp into <out>/conv_ceiling.json, in the same unit as the rates here (2 FLOP per MAC).

MODELS = {
    # mlp and lenet5 steps take 2-9 ms: 600 of them, so that a run is not over before the machine's noise averages out
    "mlp": dict(data="mnist", steps=600, peer=["--linear-impl", "onednn"]),
    "lenet5": dict(data="mnist", steps=600, peer=["--linear-impl", "onednn"]),
    "cnn": dict(data="mnist", steps=60, peer=["--linear-impl", "onednn", "--channels-last"]),
    "resnet20": dict(data="cifar10", steps=40, peer=["--linear-impl", "onednn", "--channels-last"]),
}


def sh(cmd, **kw):
    print("[bench] " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def run_frugal(model, m, data_root, out):
    sh([f"{ROOT}/build/frugal", "train", "-q", "--out", out, "--set", f"model={model}", "--set", f"dataset={m['data']}",
        "--set", f"max_steps={m['steps']}", "--set", "epochs=1", "--set", f"data_dir={data_root}"])
    res = json.load(open(f"{out}/results.json"))
    r = res["metrics"]
    sh([f"{ROOT}/build/frugal", "evaluate", "--model", f"{out}/model.bin", "--data-dir", data_root, "--out", f"{out}/ev",
        "--latency-iters", "200"])
    e = json.load(open(f"{out}/ev/evaluate.json"))
    return dict(train_img_per_s=r["train_images_per_second"], train_step_ms_median=r.get("train_step_ms_median"),
                infer_img_per_s=e["speed"]["throughput_img_per_s"], latency_b1_ms_median=e["speed"]["latency_b1_ms_median"],
                macs=r["macs_per_image"], isa=res["environment"].get("onednn_cpu_isa", ""))


def run_peer(model, m, data_root):
    d = os.path.join(data_root, "mnist" if m["data"] == "mnist" else "cifar-10-batches-bin")
    out = sh(["/usr/bin/python3", PEER, "--model", model, "--data", m["data"], "--data-dir", d, "--max-steps",
              str(m["steps"]), "--batch", "128", "--threads", "2", "--no-epoch-eval"] + m["peer"] + ["--b1-conv", "onednn"])
    res = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    r = [x for x in res if x.get("kind") == "train_result"][-1]
    return dict(train_img_per_s=r["train_img_per_s"], train_step_ms_median=r["train_step_ms_median"],
                infer_img_per_s=r["infer_img_per_s"], latency_b1_ms_median=r["latency_b1_ms_median"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mlp,lenet5,cnn,resnet20")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-root", default=os.environ.get("FRUGAL_BENCH_DATA", ""))
    ap.add_argument("--out", default=f"{ROOT}/results/bench", help="folder for train_<model>.json and train.md")
    ap.add_argument("--table-only", action="store_true", help="rewrite train.md from the JSON already in --out")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for model in ([] if args.table_only else args.models.split(",")):
        m = MODELS[model]
        root = args.data_root or (f"{ROOT}/datasets/data" if m["data"] == "mnist" else f"{ROOT}/../shared/datasets")
        runs = []
        for rep in range(args.repeats):
            f = run_frugal(model, m, root, f"{ROOT}/runs/bench/{model}_{rep}")
            p = run_peer(model, m, root)
            runs.append(dict(repeat=rep, frugal=f, peer=p))
        med = lambda who, k: statistics.median(r[who][k] for r in runs)
        summary = dict(model=model, data=m["data"], steps=m["steps"], repeats=args.repeats, peer_args=m["peer"],
                       frugal_train_img_s=med("frugal", "train_img_per_s"), peer_train_img_s=med("peer", "train_img_per_s"),
                       frugal_infer_img_s=med("frugal", "infer_img_per_s"), peer_infer_img_s=med("peer", "infer_img_per_s"),
                       frugal_latency_b1_ms=med("frugal", "latency_b1_ms_median"),
                       peer_latency_b1_ms=med("peer", "latency_b1_ms_median"))
        summary["train_ratio"] = summary["frugal_train_img_s"] / summary["peer_train_img_s"]
        summary["infer_ratio"] = summary["frugal_infer_img_s"] / summary["peer_infer_img_s"]
        summary["latency_ratio"] = summary["peer_latency_b1_ms"] / summary["frugal_latency_b1_ms"]
        summary["frugal_train_gflops"] = summary["frugal_train_img_s"] * 6 * runs[0]["frugal"]["macs"] / 1e9
        json.dump(dict(summary=summary, runs=runs, when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
                  open(f"{args.out}/train_{model}.json", "w"), indent=2)
        print(json.dumps(summary), flush=True)
    # The table covers every model benched into this folder (`--models` reruns some and keeps the others' rows).
    rows, isa = [], ""
    for model in MODELS:
        path = f"{args.out}/train_{model}.json"
        if os.path.exists(path):
            d = json.load(open(path))
            rows.append(d["summary"])
            isa = isa or d["runs"][0]["frugal"]["isa"]
    ceil_path = f"{args.out}/conv_ceiling.json"
    ceil = json.load(open(ceil_path)) if os.path.exists(ceil_path) else None
    # train.md, not README.md: results/bench/README.md also holds the other benches' sections, and
    # experiments/summarize.py puts this table into it.
    with open(f"{args.out}/train.md", "w") as f:
        f.write("# frugal vs PyTorch 1.13 (peer harness), batch 128, 2 threads, medians of interleaved repeats\n\n")
        f.write(f"oneDNN dispatched `{isa}`. GFLOP/s = train img/s x 3 passes x 2 FLOP x MACs per image. ")
        if ceil:
            f.write(f"The ceiling column divides it by this machine's fp32 conv ceiling, {ceil['gflops']:.0f} GFLOP/s "
                    f"({ceil['shape']}, {ceil['impl']}; bench/conv_ceiling.cpp, 2 FLOP per MAC; DESIGN.md's "
                    "'fp32 ≈ 214 GFLOP/s' is the same conv counted as 1 FLOP per MAC).\n\n")
        else:
            f.write("No conv_ceiling.json in this folder (`make -f Makefile.bench train` writes it), so no ceiling column.\n\n")
        f.write("Generated by `make -f Makefile.bench train`. Ratios > 1 mean frugal is faster.\n\n")
        malloc = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))
        f.write(f"Both sides ran with {malloc or 'glibc default allocator settings'}.\n\n")
        f.write("| model | frugal train img/s | peer train img/s | train ratio | infer ratio (b256) | b1 latency frugal / peer ms | latency ratio | frugal train GFLOP/s | of fp32 conv ceiling |\n|---|---|---|---|---|---|---|---|---|\n")
        for s in rows:
            frac = f"{100 * s['frugal_train_gflops'] / ceil['gflops']:.0f}%" if ceil else "-"
            f.write(f"| {s['model']} | {s['frugal_train_img_s']:.0f} | {s['peer_train_img_s']:.0f} | {s['train_ratio']:.2f}x | "
                    f"{s['infer_ratio']:.2f}x | {s['frugal_latency_b1_ms']:.3f} / {s['peer_latency_b1_ms']:.3f} | {s['latency_ratio']:.2f}x | "
                    f"{s['frugal_train_gflops']:.1f} | {frac} |\n")


if __name__ == "__main__":
    main()
