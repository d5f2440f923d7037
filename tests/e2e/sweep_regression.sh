#!/usr/bin/env bash
# CI sweep regression: four short lenet5 trials on MNIST (experiments/sweep_ci_mnist.json) checked against
# results/baselines/ci_sweep_mnist.json with `frugal sweep --check`; the same check must fail (exit 4, naming the
# metric) on a baseline the sweep cannot meet. About 20 s on 2 cores.
#   bash tests/e2e/sweep_regression.sh build/frugal
set -euo pipefail
frugal=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")  # absolute: the script changes directory
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$root"  # the sweep file names its base config from the repository root
"$frugal" sweep --config experiments/sweep_ci_mnist.json --out "$out/s" -q \
    --check results/baselines/ci_sweep_mnist.json | tail -8
python3 - "$out/s/sweep.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert [t["status"] for t in s["trials"]] == ["done"] * 4, [(t["id"], t["status"]) for t in s["trials"]]
PY
# a baseline no such sweep meets: the same command (it resumes the finished sweep, reports only) must exit 4
cat > "$out/strict.json" <<'JSON'
{"metrics": {"best.metrics.val_accuracy": {"value": 0.9999, "direction": "maximize", "tolerance": 0.0001}}}
JSON
set +e
msg=$("$frugal" sweep --config experiments/sweep_ci_mnist.json --out "$out/s" -q --check "$out/strict.json" 2>&1)
rc=$?
set -e
[ $rc -eq 4 ] || { echo "FAIL: a regressed metric exited $rc, expected 4: $msg"; exit 1; }
echo "$msg" | grep -q "best.metrics.val_accuracy.*REGRESSED" || { echo "FAIL: no REGRESSED row: $msg"; exit 1; }
echo "sweep regression check: passes the baseline, and exits 4 on one it cannot meet"
