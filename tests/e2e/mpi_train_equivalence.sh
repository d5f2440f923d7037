#!/usr/bin/env bash
# mpirun -np 2 frugal train --dist mpi  ==  frugal train with workers=2 in-process (per-epoch losses within 1e-6),
# for dense and a compressed exchange. Uses MNIST (datasets/fetch_mnist.sh) limited to a few steps.
set -euo pipefail
frugal=$1
mpirun=${2:-mpirun}
here=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Default settings on both sides, one whole MNIST epoch: oneDNN's reductions depend on the thread count, and the
# default gives every in-process worker and every MPI rank the same share of the cores (config key 'threads').
unset OMP_NUM_THREADS
common=(--set model=lenet5 --set epochs=1 --set batch=128 --set workers=2 -q)
for comp in none dgc:0.01 fp16; do
  "$frugal" train "${common[@]}" --set compressor=$comp --out "$out/inproc_$comp" > /dev/null
  "$mpirun" --allow-run-as-root --oversubscribe -np 2 "$frugal" train --dist mpi "${common[@]}" \
      --set compressor=$comp --out "$out/mpi_$comp" > /dev/null
  python3 - "$out/inproc_$comp/results.json" "$out/mpi_$comp/results.json" "$comp" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
la = [e["train_loss"] for e in a["epochs"]]
lb = [e["train_loss"] for e in b["epochs"]]
assert len(la) == len(lb) > 0, (la, lb)
for x, y in zip(la, lb):
    assert abs(x - y) <= 1e-6 * abs(x), f"{sys.argv[3]}: in-process {la} vs mpi {lb}"
ca, cb = a["communication"], b["communication"]
assert ca["bytes_sent_per_worker"] == cb["bytes_sent_per_worker"]
assert cb["bytes_handed_to_comm_per_worker"] == cb["bytes_sent_per_worker"], cb
assert a["parallelism"]["worker_threads_seen"] == b["parallelism"]["worker_threads_seen"], (a["parallelism"], b["parallelism"])
assert a["epochs"][0]["steps"] == b["epochs"][0]["steps"] == 468
print(f"{sys.argv[3]}: one epoch, train losses within 1e-6: {la} vs {lb}; bytes/worker counted "
      f"{cb['bytes_sent_per_worker']:.0f} = handed to MPI {cb['bytes_handed_to_comm_per_worker']:.0f}; "
      f"threads per worker {b['parallelism']['worker_threads_seen']}")
PY
done

# ranks started with different configs end the job on every rank with a message naming the key, never a hang
set +e
common=(--set model=lenet5 --set epochs=1 --set max_steps=30 --set batch=64 --set workers=2 -q)
msg=$(timeout 120 "$mpirun" --allow-run-as-root --oversubscribe --bind-to none \
      -np 1 "$frugal" train --dist mpi "${common[@]}" --set lr=0.1 --out "$out/bad" : \
      -np 1 "$frugal" train --dist mpi "${common[@]}" --set lr=0.2 --out "$out/bad" 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] || { echo "FAIL: mismatched ranks exited $rc"; exit 1; }
echo "$msg" | grep -q "different configs: lr" || { echo "FAIL: no message naming lr: $msg"; exit 1; }
[ ! -e "$out/bad/results.json" ] || { echo "FAIL: results.json written"; exit 1; }
echo "mismatched configs: job ended (exit $rc) naming the key"

# a compressed MPI run interrupted after epoch 1 and resumed with --resume ends like the uninterrupted one: every
# rank's residuals travel in the checkpoint (small generated MNIST-format data, so that epochs are short)
data=$out/data
python3 "$(dirname "$0")/make_mnist_fixture.py" "$data/mnist" 1024 128
small=(--set model=lenet5 --set epochs=3 --set batch=64 --set workers=2 --set compressor=dgc:0.01 -q)
run_mpi() { FRUGAL_DATA=$data "$mpirun" --allow-run-as-root --oversubscribe --bind-to none \
    -x FRUGAL_DATA -np 2 "$frugal" train --dist mpi "$@" > /dev/null; }
run_mpi "${small[@]}" --out "$out/mpi_full"
run_mpi "${small[@]}" --out "$out/mpi_part" --stop-after-epoch 1
run_mpi --resume "$out/mpi_part" -q
python3 - "$out/mpi_full/results.json" "$out/mpi_part/results.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
la = [e["train_loss"] for e in a["epochs"]]
lb = [e["train_loss"] for e in b["epochs"]]
assert len(la) == len(lb) == 3, (la, lb)
for x, y in zip(la, lb):
    assert abs(x - y) <= 1e-6 * abs(x), f"resumed MPI run {lb} vs uninterrupted {la}"
assert a["communication"]["bytes_sent_per_worker"] == b["communication"]["bytes_sent_per_worker"]
assert a["metrics"]["test_accuracy"] == b["metrics"]["test_accuracy"]
print(f"mpi dgc:0.01 resumed after epoch 1: per-epoch losses equal {la}, same bytes and accuracy")
PY
