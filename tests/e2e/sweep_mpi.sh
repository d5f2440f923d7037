#!/usr/bin/env bash
# frugal sweep under mpirun on a small synthetic MNIST-format set (about 25 s on 2 cores):
#  1. `mpirun -np 2 frugal sweep`: the ranks share one journal, every trial is claimed and run exactly once, both
#     ranks run trials, each trial trains in-process (no communicator, 1 worker) with its rank's thread share,
#     sweep.json records the ranks and the rank of every trial, rank 0 writes the reports; --check exits 4;
#  2. ASHA over the two ranks: every promotion was in the top half of its rung's results finished when it was
#     claimed, and the first came before the rung was complete (no waiting for the rung);
#  3. a rank killed (kill -9) mid-sweep ends the whole job, no reports are written, and rerunning the same command
#     finishes the sweep with every trial done exactly once.
#   bash tests/e2e/sweep_mpi.sh build/frugal [mpirun]
set -euo pipefail
frugal=$1
mpirun=${2:-mpirun}
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$here/make_mnist_fixture.py" "$tmp/data/mnist" 1024 128
export FRUGAL_DATA=$tmp/data
unset OMP_NUM_THREADS
fail() { echo "FAIL: $*"; exit 1; }
sweep_mpi() { "$mpirun" --allow-run-as-root --oversubscribe -np 2 -x FRUGAL_DATA "$frugal" sweep -q "$@"; }

# 1. a grid of 4 trials on 2 ranks
cat > "$tmp/grid.json" <<'JSON'
{"config": {"model": "lenet5", "epochs": 1, "batch": 64, "val_split": 256, "seed": 0},
 "space": {"lr": {"log": [0.01, 0.1], "n": 2}, "width": [0.5, 1]}}
JSON
sweep_mpi --config "$tmp/grid.json" --out "$tmp/g" > "$tmp/g.txt"
[ "$(grep -c "^chosen t000" "$tmp/g.txt")" -eq 1 ] || fail "rank 0 alone should print the result: $(cat "$tmp/g.txt")"
for f in trials.csv trials.md sweep.json plots/curves.png plots/lr.png; do
  [ -s "$tmp/g/$f" ] || fail "missing report $f"
done
python3 - "$tmp/g" <<'PY'
import collections, json, sys
d = sys.argv[1]
recs = [json.loads(l) for l in open(f"{d}/trials.jsonl") if l.strip()]
trials = [r for r in recs if r["trial"] != "_sweep"]
claims = collections.Counter(r["trial"] for r in trials if r["event"] == "claim")
done = {r["trial"]: r for r in trials if r["event"] == "done"}
assert sorted(done) == ["t0000", "t0001", "t0002", "t0003"], sorted(done)
assert sum(r["event"] == "done" for r in trials) == 4 and set(claims.values()) == {1}, claims
ranks = {r["rank"] for r in done.values()}
assert ranks == {0, 1}, f"both ranks must run trials: {ranks}"
assert len({r["run"] for r in trials}) == 1, "the ranks of one run share its id"
s = json.load(open(f"{d}/sweep.json"))
assert s["ranks"] == 2, s["ranks"]
assert {t["id"]: t["rank"] for t in s["trials"]} == {k: v["rank"] for k, v in done.items()}, s["trials"]
assert sum(s["trials_by_rank"].values()) == 4, s["trials_by_rank"]
assert s["parallel"] * s["threads_per_trial"] <= s["cores"], s
for t in done:
    p = json.load(open(f"{d}/trials/{t}/results.json"))["parallelism"]
    assert p["mode"] == "in-process" and p["workers"] == 1, p
    assert p["threads_per_worker"] == s["threads_per_trial"], (p, s["threads_per_trial"])
print(f"mpirun -np 2 grid: 4 trials, each claimed and run once, per rank {s['trials_by_rank']}, "
      f"{s['parallel']} x {s['threads_per_trial']} thread(s) on a rank's {s['cores']} core(s), in-process trainers")
PY
cat > "$tmp/strict.json" <<'JSON'
{"metrics": {"best.metrics.val_accuracy": {"value": 1.5, "direction": "maximize", "tolerance": 0.01}}}
JSON
set +e
sweep_mpi --config "$tmp/grid.json" --out "$tmp/g" --check "$tmp/strict.json" > "$tmp/check.txt" 2>&1
rc=$?
set -e
[ $rc -eq 4 ] || fail "--check on a baseline the sweep cannot meet exited $rc under mpirun, expected 4"
grep -q "best.metrics.val_accuracy.*REGRESSED" "$tmp/check.txt" || fail "no REGRESSED row: $(cat "$tmp/check.txt")"

# 2. ASHA on 2 ranks: promotions from the results finished so far
cat > "$tmp/asha.json" <<'JSON'
{"config": {"model": "lenet5", "batch": 64, "val_split": 256, "seed": 0},
 "space": {"lr": {"log": [0.001, 0.1], "n": 3}, "width": [0.5, 1]}, "strategy": "asha",
 "halving": {"eta": 2, "min_epochs": 1, "max_epochs": 2},
 "objectives": [{"metric": "metrics.val_loss", "direction": "minimize"}]}
JSON
sweep_mpi --config "$tmp/asha.json" --out "$tmp/a" > /dev/null
python3 - "$tmp/a" <<'PY'
import collections, json, math, sys
d = sys.argv[1]
recs = [json.loads(l) for l in open(f"{d}/trials.jsonl") if l.strip()]
recs = [r for r in recs if r["trial"] != "_sweep"]
claims = collections.Counter(r["trial"] for r in recs if r["event"] == "claim")
assert set(claims.values()) == {1}, f"a trial was claimed twice: {claims}"
done = {}  # rung -> {point: val_loss}, in journal order
first_promotion = None
for i, r in enumerate(recs):
    if r["event"] == "done":
        done.setdefault(r["rung"], {})[r["point"]] = r["values"]["metrics"]["val_loss"]
    if r["event"] == "claim" and r["rung"] > 0:
        below = done.get(r["rung"] - 1, {})
        assert r["point"] in below, f"{r['trial']} claimed before its lower rung finished"
        top = sorted(below, key=lambda p: (below[p], p))[:max(1, math.ceil(len(below) / 2))]
        assert r["point"] in top, f"{r['trial']} promoted outside the top half of {below}"
        if first_promotion is None:
            first_promotion = len(below)
assert len(done[0]) == 6 and len(done[1]) >= 1, done  # ASHA may promote more than synchronous halving
assert first_promotion is not None and first_promotion < 6, f"first promotion after {first_promotion} of 6 results"
s = json.load(open(f"{d}/sweep.json"))
assert s["best"]["epochs"] == 2 and s["ranks"] == 2, s["best"]
print(f"mpirun -np 2 asha: 6 points at 1 epoch, {len(done[1])} promoted to 2, the first after {first_promotion} "
      f"results; every promotion in the top half of the results so far")
PY

# 3. kill -9 a rank in the middle of the sweep: the job ends, and the same command then finishes it
sed 's/"epochs": 1/"epochs": 3/' "$tmp/grid.json" > "$tmp/long.json"
timeout 300 "$mpirun" --allow-run-as-root --oversubscribe -np 2 -x FRUGAL_DATA "$frugal" sweep -q \
    --config "$tmp/long.json" --out "$tmp/k" > "$tmp/k.txt" 2>&1 &
job=$!
# One poller (not a python start every few ms, which slows a loaded machine): waits while the job runs for a
# finished trial and a trial of rank 1 still running, and prints that trial's pid.
victim=$(python3 - "$tmp/k/trials.jsonl" "$job" <<'PY'
import json, os, sys, time
path, job = sys.argv[1], int(sys.argv[2])
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
deadline = time.monotonic() + 280
while time.monotonic() < deadline and alive(job):
    try:
        recs = [json.loads(l) for l in open(path) if l.endswith("\n")]
    except (FileNotFoundError, json.JSONDecodeError):
        recs = []
    done = {r["trial"] for r in recs if r["event"] == "done"}
    live = [r for r in recs if r["event"] == "claim" and r.get("rank") == 1 and r["trial"] not in done]
    if done and live:
        print(live[-1]["pid"])
        break
    time.sleep(0.05)
PY
)
if [ -z "$victim" ]; then
  echo "journal: $(cat "$tmp/k/trials.jsonl" 2>/dev/null)"
  fail "no running trial of rank 1 to kill while the job ran; its output: $(cat "$tmp/k.txt")"
fi
kill -9 "$victim"
set +e
wait $job
rc=$?
set -e
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "killing rank 1 should end the job with an error, got exit $rc: $(cat "$tmp/k.txt")"
[ ! -e "$tmp/k/sweep.json" ] || fail "reports written although a rank died"
cp "$tmp/k/trials.jsonl" "$tmp/at_kill.jsonl"
sweep_mpi --config "$tmp/long.json" --out "$tmp/k" > /dev/null
python3 - "$tmp/at_kill.jsonl" "$tmp/k/trials.jsonl" <<'PY'
import collections, json, sys
before = [json.loads(l) for l in open(sys.argv[1]) if l.endswith("\n")]
after = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
done = collections.Counter(r["trial"] for r in after if r["event"] == "done")
assert sorted(done) == ["t0000", "t0001", "t0002", "t0003"] and set(done.values()) == {1}, done
done_before = {r["trial"] for r in before if r["event"] == "done"}
rerun = {r["trial"] for r in after[len(before):] if r["event"] == "claim"}
assert not rerun & done_before, f"finished trials ran again: {rerun & done_before}"
print(f"rank 1 killed: the job ended with {len(done_before)} trial(s) done; the rerun ran {sorted(rerun)}, "
      f"every trial done once")
PY
echo "sweep under mpirun: shared journal, one run per trial, per-rank threads, ASHA, rank death all as expected"
