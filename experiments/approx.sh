#!/usr/bin/env bash
# Approximate computing (issue 4 measurements):  bash experiments/approx.sh [CONFIG[=RUN_DIR] ...]
# CONFIG names experiments/CONFIG.json; RUN_DIR (default runs/foundation/CONFIG) holds its trained fp32 model.bin.
# Default: mnist_lenet5 mnist_cnn (bash experiments/run.sh foundation mnist_lenet5 mnist_cnn trains them).
# CIFAR-10: bash experiments/approx.sh "cifar10_resnet20=runs/foundation/cifar10_resnet20_epochs=100"
# 1. characterizes the multipliers (unsigned 8x8, EvoApproxLib metrics) -> results/approx/multipliers/<spec>.json
# 2. evaluates each fp32 model under int8 exact and each approximate multiplier (signed operands, all conv/linear
#    layers), with the energy estimate -> results/approx/<model>_<spec>.json
# 3. approximate-aware fine-tuning (straight-through estimator) for drum:4 and mitchell, 2 epochs at lr 0.005,
#    then the same evaluation -> results/approx/<model>_<spec>_ft.json; with GRADS="ste lut" also with the
#    multiplier's table gradient -> <model>_<spec>_ft_lutgrad.json (direct loops: MNIST-size models)
set -euo pipefail
source "$(dirname "$0")/common.sh"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(mnist_lenet5 mnist_cnn)
mkdir -p results/approx/multipliers runs/approx
for spec in exact trunc:2 bam:0,6 mitchell drum:4 drum:6; do
  tag=${spec//[:,]/_}
  $f evaluate --multiplier "$spec" --out "runs/approx/mult_$tag" > /dev/null
  cp "runs/approx/mult_$tag/multiplier.json" "results/approx/multipliers/$tag.json"
done
for item in "${models[@]}"; do
  resolve_model "$item"
  echo "[approx] $model: fp32, int8 exact and approximate multipliers, then fine-tuning" >&2
  $f evaluate --model "$m" --no-speed --out "runs/approx/${model}_fp32" > /dev/null
  cp "runs/approx/${model}_fp32/evaluate.json" "results/approx/${model}_fp32.json"
  for spec in exact:signed trunc:2:signed bam:0,6:signed mitchell:signed drum:4:signed drum:6:signed; do
    tag=${spec//[:,]/_}
    $f evaluate --model "$m" --multiplier "$spec" --approx-mode lut --no-speed --out "runs/approx/${model}_$tag" > /dev/null
    cp "runs/approx/${model}_$tag/evaluate.json" "results/approx/${model}_$tag.json"
  done
  for spec in drum:4:signed mitchell:signed; do
    for grad in ${GRADS:-ste}; do  # GRADS="ste lut" adds fine-tuning with the multiplier's table gradient
      tag=${spec//[:,]/_}_ft
      [ "$grad" = ste ] || tag=${tag}_${grad}grad
      $f train --config "experiments/$model.json" --set init="$m" --set multiplier="$spec" --set approx_mode=functional \
        --set approx_grad="$grad" --set epochs=2 --set lr=0.005 --set schedule=cosine --set warmup_epochs=0 -q \
        --out "runs/approx/${model}_${tag}" > /dev/null
      $f evaluate --model "runs/approx/${model}_${tag}/model.bin" --multiplier "$spec" --no-speed \
        --out "runs/approx/${model}_${tag}/eval" > /dev/null
      cp "runs/approx/${model}_${tag}/eval/evaluate.json" "results/approx/${model}_${tag}.json"
    done
  done
done
python3 experiments/summarize.py approx
