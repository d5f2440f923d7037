#!/usr/bin/env bash
# The PyTorch reference harness (../shared/peers/torch_train.py) trained with frugal's CIFAR-10 resnet20 recipe
# (experiments/cifar10_resnet20.json: SGD 0.9 Nesterov, wd 5e-4, one-cycle to lr 0.1, batch 128, crop 4 + flip) on
# the same data, to compare with `bash experiments/run.sh foundation cifar10_resnet20:--set epochs=EPOCHS`
# (experiments/summarize.py puts the two side by side; the JSON lines also hold every epoch's accuracies).
#   bash experiments/peer_cifar.sh [EPOCHS]     -> results/foundation/peer/torch_resnet20_epochs=EPOCHS.jsonl
# Needs python3-torch (apt) and about 65 s per epoch on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
epochs=${1:-30}
data=${FRUGAL_DATA:-$root/../shared/datasets}
data=${data%%:*}/cifar-10-batches-bin
[ -f "$data/data_batch_1.bin" ] || { echo "peer_cifar: no CIFAR-10 binary batches in $data (set FRUGAL_DATA)" >&2; exit 1; }
mkdir -p "$root/results/foundation/peer"
out="$root/results/foundation/peer/torch_resnet20_epochs=$epochs.jsonl"
trap 'rm -f "$out.tmp"' EXIT
/usr/bin/python3 "$root/../shared/peers/torch_train.py" --model resnet20 --data cifar10 --data-dir "$data" \
  --epochs "$epochs" --augment --sched onecycle --lr 0.1 --wd 5e-4 --batch 128 --channels-last --linear-impl onednn \
  --seed 0 > "$out.tmp"
mv "$out.tmp" "$out"
echo "peer_cifar: wrote $out" >&2
