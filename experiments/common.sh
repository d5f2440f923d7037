# Sourced by the experiment scripts: the repository root as working folder, the binary ($f) and the data roots.
# Sourcing it checks provenance first (require_provenance below): results/ takes only runs of committed sources.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
f=${FRUGAL_BIN:-./build/frugal}
export FRUGAL_DATA=${FRUGAL_DATA:-$root/../shared/datasets}

# require_provenance: exits 1, naming what is wrong, unless the tree has no uncommitted changes to tracked files
# and $f was built (clean) from HEAD, so that a result's environment.git_commit names the sources it came from.
# With FRUGAL_ALLOW_DIRTY=1 it warns instead and sets provenance_problems, which mark_dirty writes into results.
require_provenance() {
  provenance_problems=()
  provenance_head=$(git -C "$root" rev-parse HEAD 2>/dev/null) || provenance_head=""
  if [ -z "$provenance_head" ]; then
    provenance_problems+=("$root is not a git checkout, so the results could not name their commit")
  else
    local changes
    changes=$(git -C "$root" status --porcelain --untracked-files=no)
    [ -z "$changes" ] || provenance_problems+=("uncommitted changes to tracked files:
$(sed 's/^/      /' <<< "$changes")")
  fi
  local version commit dirty
  version=$("$f" --version 2>/dev/null) ||
    { echo "provenance: cannot run '$f --version': build it first (cmake --build build) or set FRUGAL_BIN" >&2; exit 1; }
  commit=$(sed -n 's/.* commit \([^ ]*\) dirty .*/\1/p' <<< "$version")  # "frugal 0.1.0 commit HASH dirty BOOL"
  dirty=$(sed -n 's/.* dirty \([a-z]*\)$/\1/p' <<< "$version")
  if [ -z "$commit" ]; then
    provenance_problems+=("'$f --version' ($version) names no build commit: the binary predates build provenance, rebuild it")
  else
    [ -z "$provenance_head" ] || [ "$commit" = "$provenance_head" ] ||
      provenance_problems+=("$f was built from commit $commit but HEAD is $provenance_head: rebuild it")
    [ "$dirty" != true ] || provenance_problems+=("$f was built from a tree with uncommitted changes: commit, then rebuild")
  fi
  [ ${#provenance_problems[@]} -eq 0 ] && return 0
  local p
  if [ "${FRUGAL_ALLOW_DIRTY:-0}" = 1 ]; then
    echo "provenance: WARNING, FRUGAL_ALLOW_DIRTY=1: running anyway; results are marked \"provenance\": {\"dirty\": true}:" >&2
    for p in "${provenance_problems[@]}"; do echo "  - $p" >&2; done
    return 0
  fi
  echo "provenance: refusing to write results/ from sources that no commit names:" >&2
  for p in "${provenance_problems[@]}"; do echo "  - $p" >&2; done
  echo "Commit (or stash) the changes and rebuild (cmake --build build), or set FRUGAL_ALLOW_DIRTY=1 to run anyway" \
       "with the results marked dirty." >&2
  exit 1
}

# mark_dirty RESULT.json: after FRUGAL_ALLOW_DIRTY=1 let a run through, adds "provenance": {"dirty": true,
# "head": HEAD at run time, "problems": [...]} to the copied result; does nothing when provenance was clean.
mark_dirty() {
  [ ${#provenance_problems[@]} -gt 0 ] || return 0
  python3 - "$1" "$provenance_head" "${provenance_problems[@]}" <<'PY'
import json, sys
path, head, problems = sys.argv[1], sys.argv[2], sys.argv[3:]
r = json.load(open(path))
r["provenance"] = {"dirty": True, "head": head, "problems": problems}
with open(path + ".tmp", "w") as out:
    json.dump(r, out, indent=2)
    out.write("\n")
import os; os.replace(path + ".tmp", path)
PY
}

# resolve_model CONFIG[=RUN_DIR]: sets model (the config name) and m (its trained model.bin, by default in
# runs/foundation/CONFIG); exits with a hint when the model has not been trained.
resolve_model() {
  model=${1%%=*}
  local dir=runs/foundation/$model
  [[ "$1" == *=* ]] && dir=${1#*=}
  m=$dir/model.bin
  test -f "$m" || { echo "missing $m: run experiments/run.sh foundation $model first" >&2; exit 1; }
}

require_provenance
