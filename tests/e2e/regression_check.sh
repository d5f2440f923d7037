#!/usr/bin/env bash
# CI regression: a one-epoch MNIST lenet5 run evaluated against results/baselines/ci_mnist_lenet5_e1.json with
# `frugal evaluate --compare`; and the check itself must fail on a baseline the run cannot meet (exit 4).
#   bash tests/e2e/regression_check.sh build/frugal
set -euo pipefail
frugal=$1
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$frugal" train --set model=lenet5 --set epochs=1 --set seed=0 --out "$out/run" -q > /dev/null
"$frugal" evaluate --model "$out/run/model.bin" --no-speed --compare "$root/results/baselines/ci_mnist_lenet5_e1.json" \
    --out "$out/ev" | tail -5
python3 - "$out/ev/evaluate.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["compare"]["regressed"] is False, j["compare"]
PY
# a baseline no one-epoch run meets: the same command must exit 4 and name the metric
cat > "$out/strict.json" <<'JSON'
{"metrics": {"metrics.test_accuracy": {"value": 0.9999, "direction": "maximize", "tolerance": 0.0001}}}
JSON
set +e
msg=$("$frugal" evaluate --model "$out/run/model.bin" --no-speed --compare "$out/strict.json" 2>&1)
rc=$?
set -e
[ $rc -eq 4 ] || { echo "FAIL: a regressed metric exited $rc, expected 4"; exit 1; }
echo "$msg" | grep -q "metrics.test_accuracy.*REGRESSED" || { echo "FAIL: no REGRESSED row: $msg"; exit 1; }
echo "regression check: passes the baseline, and exits 4 on one it cannot meet"
