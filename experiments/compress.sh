#!/usr/bin/env bash
# Runs compression recipes on one trained model and copies each compress.json into results/compress/NAME.json.
#   bash experiments/compress.sh MODEL_BIN NAME [NAME ...]     recipes: experiments/compress/NAME.json
# e.g. bash experiments/compress.sh runs/compress/dc_mnist_mlp/model.bin dc_mlp_a dc_mlp_b
# RUN_TAG=NAME (with one recipe) names the output runs/compress/NAME and results/compress/NAME.json instead.
# COMPRESS_ARGS="--set k=v ..." passes more options to frugal compress (e.g. another seed for the fine-tuning:
#   RUN_TAG=dc_mlp_n_seed1 COMPRESS_ARGS="--set finetune_set=seed=1" bash experiments/compress.sh MODEL dc_mlp_n).
# Same provenance rules as run.sh (common.sh): a clean tree and a binary built from HEAD, or FRUGAL_ALLOW_DIRTY=1.
set -euo pipefail
source "$(dirname "$0")/common.sh"
model=$1; shift
mkdir -p results/compress runs/compress
for name in "$@"; do
  tag=${RUN_TAG:-$name}
  echo "[compress] $tag: frugal compress --model $model --config experiments/compress/$name.json" >&2
  # shellcheck disable=SC2086 # COMPRESS_ARGS is a list of options
  "$f" compress --model "$model" --config "experiments/compress/$name.json" --out "runs/compress/$tag" ${COMPRESS_ARGS:-}
  cp "runs/compress/$tag/compress.json" "results/compress/$tag.json"
  mark_dirty "results/compress/$tag.json"
done
