#!/usr/bin/env bash
# Set-up (idempotent) + the quickstart experiment: LeNet-5 on real MNIST, then evaluate the trained model.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
./build/frugal train --config experiments/quickstart.json --out runs/quickstart
./build/frugal evaluate --model runs/quickstart/model.bin --out runs/quickstart/eval --latency-iters 100
