#!/usr/bin/env python3
"""fp32 model vs its compressed / int8 packed model: `frugal evaluate` (batch-1 latency median, batch-256
throughput, test accuracy) on each, REPEATS interleaved rounds, load average before and after; writes
<out>/compress_speed.json (every run) and <out>/compress_speed.md (medians, ratios). Run through
`make -f Makefile.bench compress PAIRS="name:FP32_MODEL:PACKED_MODEL ..."`.
"""
import argparse, json, os, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def evaluate(frugal, model, latency_iters, conv_impl, threads):
    out = os.path.join("/tmp", "compress_speed_eval_%d" % os.getpid())
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    subprocess.run([frugal, "evaluate", "--model", model, "--latency-iters", str(latency_iters), "--out", out,
                    "--conv-impl", conv_impl], env=env,
                   check=True, capture_output=True, text=True)
    with open(os.path.join(out, "evaluate.json")) as f:
        return json.load(f)


def cpu_name():
    """'model name, family F model M' of the first CPU (AMD's VMs often say only 'AMD EPYC')."""
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if not line.strip():
                break
            k, _, v = line.partition(":")
            fields[k.strip()] = v.strip()
    return "%s, family %s model %s" % (fields.get("model name", "?"), fields.get("cpu family", "?"),
                                       fields.get("model", "?"))


def load1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frugal", default=os.path.join(ROOT, "build", "frugal"))
    ap.add_argument("--pairs", nargs="+", required=True, help="name:fp32_model:packed_model")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--latency-iters", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0,
                    help="OMP_NUM_THREADS for every evaluate (0: frugal's default, every core)")
    ap.add_argument("--conv-impl", default="first", choices=["first", "pairs", "fastest"],
                    help="the fused nets' conv kernels, as frugal evaluate --conv-impl (both models of a pair alike)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    pairs = [p.split(":") for p in a.pairs]
    runs = {"load_before": load1(), "conv_impl": a.conv_impl, "threads": a.threads, "cpu": cpu_name(), "runs": []}
    for r in range(a.repeats):
        for name, fp32, packed in pairs:
            for kind, path in (("fp32", fp32), ("packed", packed)):
                j = evaluate(a.frugal, path, a.latency_iters, a.conv_impl, a.threads)
                runs["runs"].append({"name": name, "kind": kind, "model": path, "repeat": r,
                                     "speed": j["speed"], "accuracy": j["metrics"]["test_accuracy"],
                                     "int8": j.get("int8"),
                                     "implementations": j.get("inference", {}).get("implementations"),
                                     "batch1_row_bands": j.get("inference", {}).get("batch1_row_bands"),
                                     "batch1_implementations": j.get("inference", {}).get("batch1_implementations"),
                                     "threads": j["environment"].get("threads"),
                                     "commit": j["environment"].get("git_commit"),
                                     "dirty": j["environment"].get("git_dirty")})
                print("[bench] %s %s round %d: %.3f ms, %.0f img/s" % (name, kind, r, j["speed"]["latency_b1_ms_median"],
                      j["speed"]["throughput_img_per_s"]), file=sys.stderr, flush=True)
    runs["load_after"] = load1()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "compress_speed.json.tmp"), "w") as f:
        json.dump(runs, f, indent=1)
    os.replace(os.path.join(a.out, "compress_speed.json.tmp"), os.path.join(a.out, "compress_speed.json"))
    lines = ["| model | fp32 latency b1 (ms) | packed | speed-up | fp32 img/s b256 | packed | speed-up | accuracy fp32 -> packed |",
             "|---|---|---|---|---|---|---|---|"]
    for name, _, _ in pairs:
        def med(kind, key):
            return statistics.median(x["speed"][key] for x in runs["runs"] if x["name"] == name and x["kind"] == kind)
        acc = {x["kind"]: x["accuracy"] for x in runs["runs"] if x["name"] == name}
        lf, lp = med("fp32", "latency_b1_ms_median"), med("packed", "latency_b1_ms_median")
        tf, tp = med("fp32", "throughput_img_per_s"), med("packed", "throughput_img_per_s")
        lines.append("| %s | %.3f | %.3f | %.2fx | %.0f | %.0f | %.2fx | %.2f %% -> %.2f %% |" %
                     (name, lf, lp, lf / lp, tf, tp, tp / tf, 100 * acc["fp32"], 100 * acc["packed"]))
    lines.append("")
    for name, _, _ in pairs:  # the spread of the batch-1 ratio within rounds, and which plan batch 1 ran
        def per_round(kind):
            return {x["repeat"]: x for x in runs["runs"] if x["name"] == name and x["kind"] == kind}
        f, p = per_round("fp32"), per_round("packed")
        ratios = sorted(f[r]["speed"]["latency_b1_ms_median"] / p[r]["speed"]["latency_b1_ms_median"] for r in f if r in p)
        bands = ["%s %s" % (kind, "/".join(sorted({str(x["batch1_row_bands"]) for x in per_round(kind).values()})))
                 for kind in ("fp32", "packed")]
        lines.append("%s: batch-1 speed-up per round %s (median %.2fx); batch-1 row bands (DeployNet RowBands): %s." %
                     (name, " ".join("%.2f" % v for v in ratios), statistics.median(ratios), ", ".join(bands)))
    lines.append("")
    lines.append("Medians of %d interleaved rounds; load average %.1f before, %.1f after; conv kernels: %s; "
                 "threads: %s; CPU: %s." % (a.repeats, runs["load_before"], runs["load_after"], a.conv_impl,
                                             a.threads if a.threads > 0 else "all cores", runs["cpu"]))
    with open(os.path.join(a.out, "compress_speed.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
