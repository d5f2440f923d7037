#!/usr/bin/env bash
# Runs compression recipes on one trained model and copies each compress.json into results/compress/NAME.json.
#   bash experiments/compress.sh MODEL_BIN NAME [NAME ...]     recipes: experiments/compress/NAME.json
# e.g. bash experiments/compress.sh runs/compress/dc_mnist_mlp/model.bin dc_mlp_a dc_mlp_b
# Same provenance rules as run.sh (common.sh): a clean tree and a binary built from HEAD, or FRUGAL_ALLOW_DIRTY=1.
set -euo pipefail
source "$(dirname "$0")/common.sh"
model=$1; shift
mkdir -p results/compress runs/compress
for name in "$@"; do
  echo "[compress] $name: frugal compress --model $model --config experiments/compress/$name.json" >&2
  "$f" compress --model "$model" --config "experiments/compress/$name.json" --out "runs/compress/$name"
  cp "runs/compress/$name/compress.json" "results/compress/$name.json"
  mark_dirty "results/compress/$name.json"
done
