#!/usr/bin/env bash
# Bytes that really cross the network per step under `mpirun -np W` on one host, read from the loopback
# interface's counters (/proc/net/dev), next to what frugal counted and what the cost model predicts.
# MPI runs over TCP on loopback only (--mca btl self,tcp), so every byte between ranks passes `lo`.
# Per-step bytes = (lo bytes of a run of S2 steps - lo bytes of a run of S1 steps) / (S2 - S1): start-up,
# config checks, evaluation and checkpoint gathering are the same in both runs and cancel.
#   bash experiments/mpi_wire_bytes.sh [W] [compressors...]      (defaults: 8, none fp16 dgc:0.01)
# Writes results/mpi_wire/wire_bytes.{json,md}.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
frugal=${FRUGAL_BIN:-$root/build/frugal}
W=${1:-8}
shift || true
comps=("$@")
[ ${#comps[@]} -gt 0 ] || comps=(none fp16 dgc:0.01)
S1=${S1:-10}
S2=${S2:-40}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
lo_bytes() { awk '/^ *lo:/ {sub(/^ *lo:/, ""); print $1}' /proc/net/dev; }  # received on lo = sent on lo
run() {  # compressor steps -> lo bytes during the run
  local before after
  before=$(lo_bytes)
  mpirun --allow-run-as-root --oversubscribe -np "$W" --mca btl self,tcp --mca btl_tcp_if_include lo \
    "$frugal" train --dist mpi --set model=lenet5 --set dataset=mnist --set batch=$((8 * W)) --set workers="$W" \
    --set epochs=1 --set max_steps="$2" --set compressor="$1" --set error_sample_every=0 -q --out "$out/$1_$2" > /dev/null
  after=$(lo_bytes)
  echo $((after - before))
}
rows=()
for c in "${comps[@]}"; do
  b1=$(run "$c" "$S1")
  b2=$(run "$c" "$S2")
  rows+=("$c $b1 $b2")
  echo "[mpi_wire] $c: lo bytes $b1 ($S1 steps), $b2 ($S2 steps)" >&2
done
python3 - "$out" "$W" "$S1" "$S2" "$root/results/mpi_wire" "$(git -C "$root" rev-parse HEAD)" "${rows[@]}" <<'PY'
import json, os, sys
out, W, S1, S2, dest, commit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
table = []
for row in sys.argv[7:]:
    c, b1, b2 = row.split()
    r = json.load(open(os.path.join(out, f"{c}_{S2}", "results.json")))
    cm = r["communication"]
    steps = cm["steps"]
    counted = cm["bytes_sent_per_worker"] / steps                 # per worker per step, what frugal counted
    handed = cm["bytes_handed_to_comm_per_worker"] / steps
    wire = (int(b2) - int(b1)) / (S2 - S1) / W                     # per rank per step, measured on lo
    ar = cm["bytes_allreduce_per_worker"] / steps
    ag = cm["bytes_allgather_per_worker"] / steps
    model = 2 * (W - 1) / W * ar + (W - 1) * ag                    # the cost model: ring allreduce + allgather parts
    table.append({"compressor": c, "counted_bytes_per_worker_step": counted, "allreduce_part": ar, "allgather_part": ag,
                  "handed_to_mpi_per_worker_step": handed, "loopback_bytes_per_rank_step": wire,
                  "model_bytes_per_rank_step": model, "wire_over_model": wire / model})
res = {"world": W, "steps": [S1, S2], "git_commit": commit, "cpu": r["environment"]["cpu"], "rows": table,
       "command": f"bash experiments/mpi_wire_bytes.sh {W} " + " ".join(t["compressor"] for t in table)}
os.makedirs(dest, exist_ok=True)
json.dump(res, open(os.path.join(dest, "wire_bytes.json"), "w"), indent=2)
md = [f"# Bytes on the wire under `mpirun -np {W}` (TCP over loopback)", "",
      f"`{res['command']}` at {commit[:12]} on {res['cpu']}. Per rank and step: loopback bytes measured from "
      f"/proc/net/dev (difference of a {S2}- and a {S1}-step run, divided by the {S2 - S1} extra steps and {W} ranks), "
      "next to what frugal counted and handed to MPI per worker and the cost model's prediction "
      "(2(W-1)/W x the allreduce part (ring) + (W-1) x the allgather part). Loopback counts include the TCP/IP headers "
      "of every segment and the small collectives beside the gradient (the step's loss, allgatherv's sizes), which "
      "dominate when the gradient itself is a few kB.", "",
      "| compressor | counted B/worker/step (allreduce + allgather part) | handed to MPI | on the wire B/rank/step | model | wire / model |",
      "|---|---|---|---|---|---|"]
for t in table:
    md.append(f"| {t['compressor']} | {t['counted_bytes_per_worker_step']:.0f} ({t['allreduce_part']:.0f} + "
              f"{t['allgather_part']:.0f}) | {t['handed_to_mpi_per_worker_step']:.0f} | "
              f"{t['loopback_bytes_per_rank_step']:.0f} | {t['model_bytes_per_rank_step']:.0f} | {t['wire_over_model']:.2f} |")
open(os.path.join(dest, "README.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
