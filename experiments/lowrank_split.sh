#!/usr/bin/env bash
# The two low-rank forms of a k x k conv side by side (issue 21): kxk_1x1 (k x k conv to r channels, then 1 x 1) and
# kx1_1xk (k x 1 conv to r channels, then 1 x k; Jaderberg et al. 2014), at the same energy thresholds, on the convs
# of one trained model, each fine-tuned 1 epoch. Writes results/compress/lowrank_split/<tag>_E<e>_<split>.json
# (compress.json) and prints a table.
#   bash experiments/lowrank_split.sh [MODEL_BIN] [TAG]     default: runs/compress/mnist_cnn_e1/model.bin mnist_cnn_e1
# Energies: $ENERGIES (default "0.7 0.9"). Provenance rules as run.sh (common.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
model=${1:-runs/compress/mnist_cnn_e1/model.bin}
tag=${2:-mnist_cnn_e1}
mkdir -p results/compress/lowrank_split runs/compress/lowrank_split
for e in ${ENERGIES:-0.7 0.9}; do
  for split in kxk_1x1 kx1_1xk; do
    name=${tag}_E${e}_${split}
    echo "[lowrank_split] $name" >&2
    "$f" compress --model "$model" --lowrank "$e" --lowrank-layers conv --lowrank-conv-split "$split" \
      --finetune-epochs 1 --no-speed --set finetune_set=threads=1 --out "runs/compress/lowrank_split/$name" \
      > "runs/compress/lowrank_split/$name.log" 2>&1 || { cat "runs/compress/lowrank_split/$name.log"; exit 1; }
    cp "runs/compress/lowrank_split/$name/compress.json" "results/compress/lowrank_split/$name.json"
    mark_dirty "results/compress/lowrank_split/$name.json"
  done
done
/usr/bin/python3 - "$tag" <<'PY'
import glob, json, sys
tag = sys.argv[1]
print("| E | split | ranks | params | MACs / image | val % before → factorized → fine-tuned | test % after |")
print("|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(f"results/compress/lowrank_split/{tag}_E*.json")):
    d = json.load(open(f))
    st = {s["stage"]: s for s in d["stages"]}
    lr = next(s for s in d["stages"] if s["stage"].startswith("lowrank"))
    layers = d.get("layer_details", {}).get(lr["stage"], [])
    ranks = " / ".join(str(l["rank"]) if l.get("factorized") else "kept" for l in layers if l.get("kind") == "conv")
    split = f.rsplit("_", 2)
    e = f.split("_E")[-1].split("_")[0]
    sp = "kx1_1xk" if f.endswith("kx1_1xk.json") else "kxk_1x1"
    ft = d["stages"][-2] if d["stages"][-1]["stage"] == "huffman" else d["stages"][-1]
    print(f"| {e} | {sp} | {ranks} | {d['params_before']:,} → {d['params_after']:,} | {d['macs_before']:,} → {d['macs_after']:,} "
          f"| {100*d['val_accuracy_before']:.2f} → {100*lr['val_accuracy']:.2f} → {100*d['val_accuracy_after']:.2f} "
          f"| {100*d['test_accuracy_before']:.2f} → {100*d['test_accuracy_after']:.2f} |")
PY
