#!/usr/bin/env bash
# Runs experiment configs sequentially and copies each results.json into results/<group>/<name>.json.
#   bash experiments/run.sh GROUP NAME[:--set k=v ...] ...      e.g. bash experiments/run.sh foundation mnist_lenet5
# Extra overrides after a colon are passed to frugal train (spaces allowed inside quotes); the run is named NAME_overrides,
# or $RUN_TAG (give one NAME with it).
# Refuses to start (exit 1, naming the files) when tracked files have uncommitted changes or the binary was not built
# from HEAD; FRUGAL_ALLOW_DIRTY=1 runs anyway and marks each result "provenance": {"dirty": true} (common.sh).
# FRUGAL_BIN: a copy of the binary, so that rebuilding build/ does not disturb queued runs.
set -euo pipefail
source "$(dirname "$0")/common.sh"  # cd to the root; $f, FRUGAL_DATA; checks provenance
group=$1; shift
mkdir -p "results/$group" runs
for item in "$@"; do
  name=${item%%:*}
  extra=""; [[ "$item" == *:* ]] && extra=${item#*:}
  tag=${name}
  [ -n "$extra" ] && tag="${name}_$(echo "$extra" | sed 's/--set //g; s/[^A-Za-z0-9_.=-]/_/g; s/__*/_/g')"
  [ -n "${RUN_TAG:-}" ] && tag=$RUN_TAG  # a shorter name for a single run
  echo "[run] $tag: frugal train --config experiments/$name.json $extra" >&2
  # shellcheck disable=SC2086
  "$f" train --config "experiments/$name.json" $extra --out "runs/$group/$tag" -q
  cp "runs/$group/$tag/results.json" "results/$group/$tag.json"
  mark_dirty "results/$group/$tag.json"
done
