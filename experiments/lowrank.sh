#!/usr/bin/env bash
# Low-rank emulation vs the bit-exact table path, network level (issue 4):
#   bash experiments/lowrank.sh [CONFIG[=RUN_DIR] ...]     default: mnist_lenet5 mnist_cnn
# Evaluates each trained fp32 model (RUN_DIR/model.bin, default runs/foundation/CONFIG) with every conv/linear layer
# approximate (8-bit signed operands) under the bit-exact LUT path and under lowrank:R for R in $RANKS (default
# 1 2 4 8): results/approx/lowrank/<config>_<spec>_<mode>.json. summarize.py tabulates top-1 and test loss
# against the LUT path, so the rank a model needs can be read off (the kernel cost of each rank is in
# results/bench/approx_kernels.md).
set -euo pipefail
source "$(dirname "$0")/common.sh"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(mnist_lenet5 mnist_cnn)
mkdir -p results/approx/lowrank runs/approx/lowrank
for item in "${models[@]}"; do
  resolve_model "$item"
  for spec in ${SPECS:-mitchell:signed drum:4:signed}; do
    for mode in lut $(for r in ${RANKS:-1 2 4 8}; do echo "lowrank:$r"; done); do
      tag=${model}_${spec//[:,]/_}_${mode//:/_}
      echo "[lowrank] $model $spec $mode" >&2
      $f evaluate --model "$m" --multiplier "$spec" --approx-mode "$mode" --no-speed \
        --out "runs/approx/lowrank/$tag" > /dev/null
      cp "runs/approx/lowrank/$tag/evaluate.json" "results/approx/lowrank/$tag.json"
    done
  done
done
python3 experiments/summarize.py approx > /dev/null
