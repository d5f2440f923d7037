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
CEIL_FP32 = 214.0  # GFLOP/s, oneDNN 2.6.3 3x3 conv 64->64 fp32 ceiling on these machines (DESIGN.md)

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
    ap.add_argument("--out", default=f"{ROOT}/results/bench", help="folder for train_<model>.json and README.md")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for model in args.models.split(","):
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
        summary["fraction_of_fp32_conv_ceiling"] = summary["frugal_train_gflops"] / CEIL_FP32
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
    # train.md, not README.md: results/bench/README.md also holds the other benches' sections, and
    # experiments/summarize.py puts this table into it.
    with open(f"{args.out}/train.md", "w") as f:
        f.write("# frugal vs PyTorch 1.13 (peer harness), batch 128, 2 threads, medians of interleaved repeats\n\n")
        f.write(f"oneDNN dispatched `{isa}`; the ceiling column is against DESIGN.md's fp32 conv ceiling ({CEIL_FP32:g} GFLOP/s, "
                "measured on the AVX-512 machines).\n\n")
        f.write("Generated by `make -f Makefile.bench train`. Ratios > 1 mean frugal is faster.\n\n")
        f.write("| model | frugal train img/s | peer train img/s | train ratio | infer ratio (b256) | b1 latency frugal / peer ms | latency ratio | frugal train GFLOP/s | of fp32 conv ceiling |\n|---|---|---|---|---|---|---|---|---|\n")
        for s in rows:
            f.write(f"| {s['model']} | {s['frugal_train_img_s']:.0f} | {s['peer_train_img_s']:.0f} | {s['train_ratio']:.2f}x | "
                    f"{s['infer_ratio']:.2f}x | {s['frugal_latency_b1_ms']:.3f} / {s['peer_latency_b1_ms']:.3f} | {s['latency_ratio']:.2f}x | "
                    f"{s['frugal_train_gflops']:.1f} | {100 * s['fraction_of_fp32_conv_ceiling']:.0f}% |\n")


if __name__ == "__main__":
    main()
