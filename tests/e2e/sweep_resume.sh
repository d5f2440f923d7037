#!/usr/bin/env bash
# frugal sweep end to end on a small synthetic MNIST-format set (seconds):
#  1. kill -9 in the middle of a sweep, rerun the same command: every trial ends with exactly one "done" record,
#     trials finished before the kill are not run again, and a trial with a dead owner's claim reruns;
#  2. two processes on one journal: no trial is claimed or run twice;
#  3. a changed search space on an existing journal is an error naming what changed;
#  4. the outputs (trials.csv, trials.md with the front marked, sweep.json, PNG plots), and --check exits 4 on a
#     baseline the sweep cannot meet;
#  5. successive halving promotes the best half of its first rung to the longer budget.
#   bash tests/e2e/sweep_resume.sh build/frugal
set -euo pipefail
frugal=$1
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$here/make_mnist_fixture.py" "$tmp/data/mnist" 1024 128
export FRUGAL_DATA=$tmp/data
cat > "$tmp/sweep.json" <<'JSON'
{"config": {"model": "lenet5", "epochs": 1, "batch": 64, "val_split": 256, "seed": 0},
 "space": {"lr": {"log": [0.01, 0.1], "n": 2}, "width": [0.5, 1]},
 "objectives": [{"metric": "metrics.val_accuracy", "direction": "maximize"},
                {"metric": "sweep.weight_bytes", "direction": "minimize"}]}
JSON
n=4
fail() { echo "FAIL: $*"; exit 1; }

# 1. kill -9 once the first trial is done, then resume
out=$tmp/a
"$frugal" sweep --config "$tmp/sweep.json" --out "$out" --parallel 2 -q > /dev/null 2>&1 &
pid=$!
for _ in $(seq 600); do
  grep -q '"event":"done"' "$out/trials.jsonl" 2>/dev/null && break
  sleep 0.05
done
kill -9 $pid 2>/dev/null || fail "the sweep ended before it could be killed"
wait $pid 2>/dev/null || true
cp "$out/trials.jsonl" "$tmp/at_kill.jsonl"
# a claim by a process that is gone (a pid that has exited, this host): that trial must rerun too
sleep 0 & dead=$!; wait $dead
python3 - "$out/trials.jsonl" $dead <<'PY'
import json, socket, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
done = {r["trial"] for r in recs if r["event"] == "done"}
todo = [t for t in ["t0003", "t0002", "t0001"] if t not in done][0]
open(sys.argv[1], "a").write(json.dumps({"trial": todo, "event": "claim", "pid": int(sys.argv[2]),
                                         "host": socket.gethostname()}) + "\n")
PY
"$frugal" sweep --config "$tmp/sweep.json" --out "$out" --parallel 2 -q > "$tmp/resume.txt"
python3 - "$tmp/at_kill.jsonl" "$out/trials.jsonl" $n <<'PY'
import json, sys
before = [json.loads(l) for l in open(sys.argv[1]) if l.strip() and l.endswith("\n")]
after = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
n = int(sys.argv[3])
done_before = {r["trial"] for r in before if r["event"] == "done"}
assert done_before, "no trial had finished at the kill"
later = after[len(before):]
done = [r["trial"] for r in after if r["event"] == "done"]
assert sorted(done) == sorted(set(done)) and len(done) == n, f"each trial must finish exactly once: {done}"
rerun = {r["trial"] for r in later if r["event"] == "claim"} & done_before
assert not rerun, f"trials finished before the kill ran again: {rerun}"
open_at_kill = {r["trial"] for r in before if r["event"] == "claim"} - done_before - {"_sweep"}
print(f"resume: {len(done_before)} done at the kill, {len(open_at_kill)} interrupted and rerun, {n} done in all")
PY
grep -q "chosen t000" "$tmp/resume.txt" || fail "no chosen trial printed: $(cat "$tmp/resume.txt")"

# 2. two processes on one journal
out=$tmp/b
"$frugal" sweep --config "$tmp/sweep.json" --out "$out" --parallel 1 -q > /dev/null &
p1=$!
"$frugal" sweep --config "$tmp/sweep.json" --out "$out" --parallel 1 -q > /dev/null &
p2=$!
wait $p1 || fail "first of two processes failed"
wait $p2 || fail "second of two processes failed"
python3 - "$out/trials.jsonl" $n <<'PY'
import collections, json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
claims = collections.Counter(r["trial"] for r in recs if r["event"] == "claim")
done = collections.Counter(r["trial"] for r in recs if r["event"] == "done")
pids = {r["pid"] for r in recs if r["event"] == "claim"}
assert len(done) == int(sys.argv[2]) and set(done.values()) == {1}, f"done: {done}"
assert set(claims.values()) == {1}, f"a trial was claimed twice: {claims}"
print(f"two processes: {len(done)} trials, each claimed and run once, by {len(pids)} processes")
PY

# 3. a changed space is an error naming the change
sed 's/"width": \[0.5, 1\]/"width": [0.5, 1, 2]/' "$tmp/sweep.json" > "$tmp/changed.json"
set +e
msg=$("$frugal" sweep --config "$tmp/changed.json" --out "$tmp/a" -q 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] || fail "a changed space on an existing journal was accepted"
echo "$msg" | grep -q "space.width: \[0.5,1.0\] -> \[0.5,1.0,2.0\]" || fail "the error does not name the change: $msg"

# 4. outputs and --check
out=$tmp/a
[ "$(wc -l < "$out/trials.csv")" -eq $((n + 1)) ] || fail "trials.csv should have $n rows"
grep -q "★" "$out/trials.md" || fail "trials.md marks no chosen trial"
grep -q "◆" "$out/trials.md" || fail "trials.md marks no Pareto front"
for f in pareto_metrics_val_accuracy_vs_sweep_weight_bytes curves lr width; do
  [ -s "$out/plots/$f.png" ] || fail "missing plot plots/$f.png"
done
python3 - "$out/sweep.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["best"]["id"] in s["pareto_front"], s["pareto_front"]
assert 0 <= s["best"]["metrics"]["val_accuracy"] <= 1 and "test_accuracy" in s["best"]["metrics"]
PY
cat > "$tmp/strict.json" <<'JSON'
{"metrics": {"best.metrics.val_accuracy": {"value": 1.5, "direction": "maximize", "tolerance": 0.01}}}
JSON
set +e
msg=$("$frugal" sweep --config "$tmp/sweep.json" --out "$out" -q --check "$tmp/strict.json" 2>&1)
rc=$?
set -e
[ $rc -eq 4 ] || fail "--check on a baseline the sweep cannot meet exited $rc, expected 4: $msg"
echo "$msg" | grep -q "best.metrics.val_accuracy.*REGRESSED" || fail "no REGRESSED row: $msg"
# 5. successive halving: the best half of rung 0 (by validation loss) retrains at twice the epochs
cat > "$tmp/halving.json" <<'JSON'
{"config": {"model": "lenet5", "batch": 64, "val_split": 256, "seed": 0},
 "space": {"lr": {"log": [0.001, 0.1], "n": 4}}, "strategy": "halving",
 "halving": {"eta": 2, "min_epochs": 1, "max_epochs": 2},
 "objectives": [{"metric": "metrics.val_loss", "direction": "minimize"}]}
JSON
"$frugal" sweep --config "$tmp/halving.json" --out "$tmp/h" -q > /dev/null
python3 - "$tmp/h/sweep.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r0 = sorted((t for t in s["trials"] if t["rung"] == 0), key=lambda t: t["values"]["metrics"]["val_loss"])
r1 = [t for t in s["trials"] if t["rung"] == 1]
assert len(r0) == 4 and all(t["epochs"] == 1 for t in r0), r0
assert sorted(t["point"] for t in r1) == sorted(t["point"] for t in r0[:2]), "promoted trials are not the best half"
assert all(t["epochs"] == 2 and t["candidate"] for t in r1) and s["best"]["id"] in [t["id"] for t in r1]
assert s["compute"]["trial_epochs"] == 4 * 1 + 2 * 2, s["compute"]
PY
echo "sweep e2e: resume after kill -9, two processes, changed space, outputs, --check and halving all as expected"
