#!/usr/bin/env bash
# Set-up (idempotent) + the quickstart pipeline on real MNIST, a few minutes on 2 cores:
#   1. train LeNet-5 (4 epochs, fp32)                                   -> runs/quickstart
#   2. evaluate it and compare with the checked-in baseline             -> runs/quickstart/eval
#   3. train it again on 4 data-parallel workers exchanging DGC-compressed gradients (1 %), with every conv and
#      linear layer computing through the approximate DRUM-4 multiplier (8-bit, LUT)   -> runs/quickstart_dgc_drum
#   4. compress model 1 (prune 90 %, share weights, Huffman; 1 fine-tuning epoch)   -> runs/quickstart/packed
#   5. evaluate the packed file, and print one table of the four models
# QUICKSTART_STEPS=1 runs only steps 1-2 (the original quickstart).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
frugal=./build/frugal
baseline=results/baselines/quickstart.json

echo "== 1. train lenet5 on MNIST"
$frugal train --config experiments/quickstart.json --out runs/quickstart
echo "== 2. evaluate, compare with $baseline"
$frugal evaluate --model runs/quickstart/model.bin --out runs/quickstart/eval --latency-iters 100 --compare "$baseline"
[ "${QUICKSTART_STEPS:-5}" -le 2 ] && exit 0

echo "== 3. 4 workers, DGC 1 % gradients, DRUM-4 approximate multiplier"
$frugal train --config experiments/quickstart.json --set epochs=2 --set workers=4 --set compressor=dgc:0.01 \
    --set multiplier=drum:4 --out runs/quickstart_dgc_drum
echo "== 4. compress model 1"
$frugal compress --model runs/quickstart/model.bin --sparsity 0.9 --finetune-epochs 1 --out runs/quickstart/packed
echo "== 5. evaluate the packed model"
$frugal evaluate --model runs/quickstart/packed/model.packed --out runs/quickstart/packed/eval --no-speed

python3 - <<'PY'
import json, os
def load(p):
    return json.load(open(p)) if os.path.exists(p) else {}
rows = []
t = load("runs/quickstart/results.json"); e = load("runs/quickstart/eval/evaluate.json")
rows.append(("1 lenet5 fp32", t["metrics"]["test_accuracy"], os.path.getsize("runs/quickstart/model.bin"), "-", "-"))
d = load("runs/quickstart_dgc_drum/results.json")
c = d.get("communication", {})
rows.append(("3 4 workers dgc:0.01 + drum:4", d["metrics"]["test_accuracy"],
             os.path.getsize("runs/quickstart_dgc_drum/model.bin"),
             "%.0f kB" % (c.get("bytes_sent_per_worker", 0) / max(1, c.get("steps", 1)) / 1e3),
             "%.1fx" % c.get("ratio_vs_fp32", 0)))
p = load("runs/quickstart/packed/eval/evaluate.json")
rows.append(("4 compressed (packed)", p["metrics"]["test_accuracy"],
             os.path.getsize("runs/quickstart/packed/model.packed"), "-", "-"))
print("\n%-32s %10s %12s %22s %10s" % ("model", "test acc", "file bytes", "sent/worker/step", "vs fp32"))
for name, acc, size, sent, ratio in rows:
    print("%-32s %9.2f%% %12d %22s %10s" % (name, 100 * acc, size, sent, ratio))
print("\nbaseline comparison (step 2): %s" % ("regressed" if e.get("compare", {}).get("regressed") else "ok"))
PY
