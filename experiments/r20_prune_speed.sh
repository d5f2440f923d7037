#!/usr/bin/env bash
# Speed of resnet20 Taylor channel pruning (issue: >= 1.6x at batch 1 and batch 256) for every conv-kernel choice
# of the fused nets (frugal evaluate --conv-impl first | pairs | fastest) and thread count, on models of the shapes
# of r20_channels_taylor_b (results/compress/README.md has their accuracy). Speed does not depend on the weights'
# values, so the models are a 20-step resnet20 (experiments/cifar10_resnet20_val30.json, max_steps 20) and its
# pruned copy (experiments/compress/r20_channels_taylor_shape.json): minutes instead of the 2 h of training.
#   bash experiments/r20_prune_speed.sh [OUT]     (default OUT: results/compress/r20_speed)
#   IMPLS="fastest" THREAD_COUNTS="0" bash experiments/r20_prune_speed.sh OUT   (some cells only; 0 = every core)
# Writes OUT/threads{all,1}_{first,pairs,fastest}/compress_speed.{json,md} with bench/compress_speed.py (what
# make -f Makefile.bench compress runs; REPEATS interleaved rounds, default 5). Run it on a quiet machine; the
# tables name the CPU.
set -euo pipefail
source "$(dirname "$0")/common.sh"  # cd to the root; $f, FRUGAL_DATA; checks provenance
out=${1:-results/compress/r20_speed}
src=runs/compress/r20_steps20
"$f" train --config experiments/cifar10_resnet20_val30.json --set max_steps=20 --set threads=2 --out "$src" -q
"$f" compress --model "$src/model.bin" --config experiments/compress/r20_channels_taylor_shape.json \
  --out runs/compress/r20_steps20_ch50
for threads in ${THREAD_COUNTS:-0 1}; do
  for impl in ${IMPLS:-first pairs fastest}; do
    dir="$out/threads$([ "$threads" = 0 ] && echo all || echo "$threads")_$impl"
    /usr/bin/python3 bench/compress_speed.py --frugal "$f" --repeats "${REPEATS:-5}" --conv-impl "$impl" \
      --threads "$threads" --out "$dir" --pairs "resnet20_ch50:$src/model.bin:runs/compress/r20_steps20_ch50/model.packed"
  done
done
