#!/usr/bin/env bash
# A rank that dies under mpirun ends the whole job within seconds, naming the rank and the cause, and no
# results.json is written — for every way a rank can die: an exception (std::runtime_error, std::bad_alloc),
# std::terminate, SIGSEGV, exit() in the middle of the job, and main() returning 0 while the others still train
# (MPI_Finalize's wait for them is bounded: comm::kFinalizeWaitS). The failures are injected with the test hook
# FRUGAL_FAULT=RANK:STEP:KIND (apps/frugal/train_cmd.cpp). Small generated MNIST-format data, 3 ranks.
# Usage: mpi_rank_death.sh FRUGAL [MPIRUN [KIND...]]
set -euo pipefail
frugal=$1
mpirun=${2:-mpirun}
shift $(( $# < 2 ? $# : 2 ))
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(throw bad_alloc terminate segv exit return)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMP_NUM_THREADS=1
python3 "$(dirname "$0")/make_mnist_fixture.py" "$out/data/mnist" 480 96
export FRUGAL_DATA=$out/data
args=(--set model=lenet5 --set epochs=1 --set batch=48 --set workers=3 -q)  # 10 steps
# run NAME [ENV...]: a 3-rank job under `timeout 60`; sets rc, secs and log
run() {
  local name=$1; shift
  local t0 t1
  t0=$(date +%s%N)
  set +e
  log=$(env "$@" timeout -k 5 60 "$mpirun" --allow-run-as-root --oversubscribe --bind-to none -x OMP_NUM_THREADS \
        -x FRUGAL_DATA -x FRUGAL_FAULT -np 3 "$frugal" train --dist mpi "${args[@]}" --out "$out/$name" 2>&1)
  rc=$?
  set -e
  t1=$(date +%s%N)
  secs=$(( (t1 - t0) / 1000000000 ))
}

# control: unset, the hook does nothing and the run writes results.json (so its absence below means something)
run ok FRUGAL_FAULT=
[ $rc -eq 0 ] && [ -e "$out/ok/results.json" ] || { echo "FAIL: run without a fault exited $rc: $log"; exit 1; }
echo "no fault: exit 0 in ${secs}s, results.json written"

declare -A cause=(
  [throw]='frugal: rank 1 aborting the job: .*injected fault FRUGAL_FAULT=1:5:throw'
  [bad_alloc]='frugal: rank 1 aborting the job: .*bad_alloc'
  [terminate]='frugal: rank 1 aborting the job: terminate called.*injected fault FRUGAL_FAULT=1:5:terminate'
  [segv]='frugal: rank 1: fatal signal SIGSEGV'
  [exit]='frugal: rank 1 aborting the job: exit\(\) called'
  [return]='frugal: rank 1 aborting the job: MPI_Finalize waited'
)
failed=0
for kind in "${kinds[@]}"; do
  run "$kind" FRUGAL_FAULT=1:5:$kind
  why=""
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then why="hung: killed by timeout 60"
  elif [ $rc -eq 0 ]; then why="exit code 0"
  elif [ $secs -ge 30 ]; then why="took ${secs}s"
  elif ! grep -Eq "${cause[$kind]}" <<<"$log"; then why="no line matching '${cause[$kind]}'"
  elif [ -e "$out/$kind/results.json" ]; then why="results.json written"
  fi
  if [ -n "$why" ]; then
    echo "FAIL: rank 1 dying by $kind: $why (exit $rc, ${secs}s). Output:"
    sed 's/^/    /' <<<"$log"
    failed=1
  else
    echo "$kind: job ended in ${secs}s (exit $rc): $(grep -Eo "${cause[$kind]}[^\"]{0,40}" <<<"$log" | head -1)"
  fi
done
exit $failed
